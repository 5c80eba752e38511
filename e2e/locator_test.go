package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker"
	"github.com/openqhin/openqhin/broker/fsm"
	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// The persons of the locator tests. Ellen is at p2 as registered and at p3
// under her middle name, without a phone: no token in common with p2's
// record, yet p3's matcher finds her for a query written as p2 wrote her.
// Doris is at p2 only.
var (
	ellenAtP2 = &qhinv1.Demographics{Given: "Ellen Marie", Family: "Vasquez-Whitford", BirthDate: "1958-11-23", Gender: "female",
		Phone: "773-555-0188", Address: &qhinv1.Address{Lines: []string{"12 Elm St"}, City: "Chicago", State: "IL", PostalCode: "60614"}}
	ellenAtP3 = &qhinv1.Demographics{Given: "Marie", Family: "Vasquez Whitford", BirthDate: "1958-11-23", Gender: "female",
		Address: &qhinv1.Address{Lines: []string{"12 Elm Street"}, City: "Chicago", State: "IL", PostalCode: "60614"}}
	dorisAtP2 = &qhinv1.Demographics{Given: "Doris Joan", Family: "Blackwood", BirthDate: "1959-10-02", Gender: "female",
		Phone: "215-555-0123", Address: &qhinv1.Address{Lines: []string{"4 Pine St"}, City: "Philadelphia", State: "PA", PostalCode: "19176"}}
	nobody = &qhinv1.Demographics{Given: "Quentin", Family: "Abernathy", BirthDate: "1977-07-07", Gender: "male"}
)

func newKey(t *testing.T) *match.LinkageKey {
	t.Helper()
	k, err := match.GenerateLinkageKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// locatorNetwork starts brokers and three members with a linkage key.
func locatorNetwork(t *testing.T, brokers int, routing broker.Routing) (*Network, *match.LinkageKey, *logBuffer) {
	t.Helper()
	key := newKey(t)
	n, logs := startNetwork(t, Options{Brokers: brokers, Participants: 3, LinkageKey: key, Routing: routing})
	return n, key, logs
}

func put(t *testing.T, n *Network, j int, id string, d *qhinv1.Demographics) {
	t.Helper()
	if err := n.Participants[j].Server.PutPatient(context.Background(), id, d); err != nil {
		t.Fatal(err)
	}
}

func waitLocator(t *testing.T, n *Network, phase string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := n.WaitLocator(ctx); err != nil {
		t.Fatalf("phase %q: timed out after 60s: %v", phase, err)
	}
}

// discoverWithTokens queries as p1 with the tokens of d under key (none
// when key is nil).
func discoverWithTokens(t *testing.T, gw qhinv1.GatewayClient, d *qhinv1.Demographics, key *match.LinkageKey) *qhinv1.DiscoverPatientsResponse {
	t.Helper()
	req := &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: d}
	if key != nil {
		req.LocatorTokens = []*qhinv1.LocatorTokens{key.QueryTokens(d)}
	}
	resp, err := gw.DiscoverPatients(callCtx(t), req)
	if err != nil {
		t.Fatalf("discover: %v", err)
	}
	return resp
}

// statuses renders a query's per-member outcome as "p2:OK p3:SKIPPED(no
// record-locator hit)".
func statuses(resp *qhinv1.DiscoverPatientsResponse) string {
	var out []string
	for _, r := range resp.Responders {
		s := r.ParticipantId + ":" + strings.TrimPrefix(r.Status.String(), "RESPONDER_STATE_")
		if r.Status == qhinv1.ResponderState_RESPONDER_STATE_SKIPPED {
			s += "(" + r.Detail + ")"
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// holdersEverywhere checks that every broker's locator lists exactly want
// as the holders of d's tokens.
func holdersEverywhere(t *testing.T, n *Network, key *match.LinkageKey, d *qhinv1.Demographics, want string) {
	t.Helper()
	q := key.QueryTokens(d)
	for _, b := range n.Brokers {
		got, err := b.Server.Node().FSM().LocatorHolders([]fsm.TokenSet{{KeyID: q.KeyId, Tokens: q.Tokens}})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, ",") != want {
			t.Errorf("broker %s lists %v as holders, want %s", b.ID, got, want)
		}
	}
}

func TestLocator_PublishAndWithdrawThroughTheCluster(t *testing.T) {
	n, key, _ := locatorNetwork(t, 3, "")
	put(t, n, 1, "p2-ellen", ellenAtP2)
	put(t, n, 1, "p2-doris", dorisAtP2)
	put(t, n, 2, "p3-ellen", ellenAtP3)
	waitLocator(t, n, "publish")
	holdersEverywhere(t, n, key, ellenAtP2, "p2")
	holdersEverywhere(t, n, key, dorisAtP2, "p2")
	// Ellen's birth day cannot be a month: 4 tokens (3 without a phone);
	// Doris's can: 5.
	for j, want := range map[int]int{1: 9, 2: 3} {
		st, _, _ := n.Participants[j].Server.Locator()
		if st.Tokens != want {
			t.Errorf("%s holds %d tokens, want %d", n.Participants[j].ID, st.Tokens, want)
		}
		for _, b := range n.Brokers {
			if got, _ := b.Server.Node().FSM().LocatorCount(n.Participants[j].ID); got != uint64(want) {
				t.Errorf("broker %s counts %d tokens of %s, want %d", b.ID, got, n.Participants[j].ID, want)
			}
		}
	}

	// An update withdraws the tokens the old demographics gave and
	// publishes the new ones; a delete withdraws the rest.
	moved := proto.Clone(dorisAtP2).(*qhinv1.Demographics)
	moved.Family, moved.Phone, moved.Address = "Okafor", "", &qhinv1.Address{PostalCode: "10001"}
	put(t, n, 1, "p2-doris", moved)
	waitLocator(t, n, "update")
	holdersEverywhere(t, n, key, dorisAtP2, "")
	holdersEverywhere(t, n, key, moved, "p2")
	if err := n.Participants[1].Server.DeletePatient(context.Background(), "p2-doris"); err != nil {
		t.Fatal(err)
	}
	waitLocator(t, n, "delete")
	holdersEverywhere(t, n, key, moved, "")
	holdersEverywhere(t, n, key, ellenAtP2, "p2")
	for _, b := range n.Brokers {
		if got, _ := b.Server.Node().FSM().LocatorCount("p2"); got != 4 {
			t.Errorf("broker %s counts %d tokens of p2 after the delete, want 4", b.ID, got)
		}
	}

	// A member that restarts with another key re-publishes everything
	// under it and withdraws the old key's tokens.
	rotated := newKey(t)
	conn := dial(t, n, n.Operator())
	if err := setLinkageKey(context.Background(), conn, rotated.ID()); err != nil {
		t.Fatal(err)
	}
	n.opts.LinkageKey = rotated
	for j := range n.Participants {
		if err := n.StopParticipant(context.Background(), j); err != nil {
			t.Fatal(err)
		}
		if err := n.StartParticipant(j); err != nil {
			t.Fatal(err)
		}
	}
	waitLocator(t, n, "rotation")
	holdersEverywhere(t, n, rotated, ellenAtP2, "p2")
	holdersEverywhere(t, n, key, ellenAtP2, "")
}

// TestLocator_RecordsChangedWhileDownArePublishedAtStart writes to a
// stopped member's store as qhinctl import does — a new patient, a changed
// one, a deleted one — and starts the member again: it publishes and
// withdraws what changed before anything else is written.
func TestLocator_RecordsChangedWhileDownArePublishedAtStart(t *testing.T) {
	n, key, _ := locatorNetwork(t, 1, "")
	put(t, n, 1, "p2-doris", dorisAtP2)
	put(t, n, 1, "p2-quentin", nobody)
	waitLocator(t, n, "publish")
	holdersEverywhere(t, n, key, nobody, "p2")

	if err := n.StopParticipant(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(n.Participants[1].Dir, "data", "participant.db"))
	if err != nil {
		t.Fatal(err)
	}
	moved := proto.Clone(dorisAtP2).(*qhinv1.Demographics)
	moved.Family, moved.Phone, moved.Address = "Okafor", "", &qhinv1.Address{PostalCode: "10001"}
	err = errors.Join(
		st.PutPatients(context.Background(), []store.Patient{{ID: "p2-ellen", Demographics: ellenAtP2}, {ID: "p2-doris", Demographics: moved}}),
		st.DeletePatient(context.Background(), "p2-quentin"),
		st.Close())
	if err != nil {
		t.Fatal(err)
	}
	// Nothing reached the brokers while the member was down.
	holdersEverywhere(t, n, key, ellenAtP2, "")
	holdersEverywhere(t, n, key, dorisAtP2, "p2")

	if err := n.StartParticipant(1); err != nil {
		t.Fatal(err)
	}
	waitLocator(t, n, "start after the import")
	holdersEverywhere(t, n, key, ellenAtP2, "p2")
	holdersEverywhere(t, n, key, moved, "p2")
	holdersEverywhere(t, n, key, dorisAtP2, "")
	holdersEverywhere(t, n, key, nobody, "")
	stp, _, _ := n.Participants[1].Server.Locator()
	if got, _ := n.Brokers[0].Server.Node().FSM().LocatorCount("p2"); got != uint64(stp.Tokens) || got == 0 {
		t.Errorf("brokers count %d tokens of p2, p2 holds %d", got, stp.Tokens)
	}
}

// TestLocator_NewBrokerGetsTheLocatorBySnapshot adds a broker to a cluster
// whose log no longer holds the publications: it learns the locator from
// the leader's snapshot.
func TestLocator_NewBrokerGetsTheLocatorBySnapshot(t *testing.T) {
	key := newKey(t)
	n, _ := startNetwork(t, Options{Brokers: 3, Participants: 3, LinkageKey: key, TrailingLogs: 2})
	put(t, n, 1, "p2-doris", dorisAtP2)
	put(t, n, 2, "p3-ellen", ellenAtP3)
	waitLocator(t, n, "publish")
	// Push the publications out of the log: the newcomer cannot replay them.
	registerBatch(t, n, "filler", 50, 10)
	leader := waitLeader(t, n, -1)
	if err := n.Brokers[leader].Server.Node().Snapshot(); err != nil {
		t.Fatal(err)
	}
	snapIndex := n.Brokers[leader].Server.Node().LastSnapshotIndex()

	b4, err := n.AddBroker(false)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the new broker to be ready", func() bool { return n.Brokers[b4].Server.Ready() })
	waitFor(t, 10*time.Second, fmt.Sprintf("the new broker's last snapshot index to reach %d (caught up without a snapshot install?)", snapIndex),
		func() bool { return n.Brokers[b4].Server.Node().LastSnapshotIndex() >= snapIndex })
	waitLocator(t, n, "the new broker catches up")
	holdersEverywhere(t, n, key, dorisAtP2, "p2")
	holdersEverywhere(t, n, key, ellenAtP3, "p3")
	if got, _ := n.Brokers[b4].Server.Node().FSM().LocatorCount("p2"); got != 5 {
		t.Errorf("new broker counts %d tokens of p2, want 5", got)
	}
}

// TestLocator_FollowerBehindAKeyDoesNotRefuseIt adds a linkage key through
// the leader and at once publishes, or queries, under it at each follower: a follower
// that has not yet applied the key must not answer that the network does
// not know it (a refusal a member would take for a wrong key), however
// late it learns it. On code that refuses from the follower's own state
// this fails most rounds; it cannot pass by timing, since every round's
// publication must succeed.
func TestLocator_FollowerBehindAKeyDoesNotRefuseIt(t *testing.T) {
	n, _ := startNetwork(t, Options{Brokers: 3, Participants: 2, LinkageKey: newKey(t)})
	waitLocator(t, n, "start")
	op := dial(t, n, n.Operator())
	tokens := newKey(t).QueryTokens(dorisAtP2).Tokens
	for round := range 10 {
		k := newKey(t)
		if err := setLinkageKey(context.Background(), op, k.ID()); err != nil {
			t.Fatal(err)
		}
		leader := waitLeader(t, n, -1)
		for i, b := range n.Brokers {
			if i == leader {
				continue
			}
			cc := rawConn(t, b.GRPCAddr, brokerCreds(n, n.ParticipantSource(1)))
			if _, err := qhinv1.NewLocatorClient(cc).PublishTokens(callCtx(t), &qhinv1.PublishTokensRequest{KeyId: k.ID(), Tokens: tokens}); err != nil {
				t.Fatalf("round %d: publish under a key just added, through follower %s: %v", round, b.ID, err)
			}
			// A query with tokens under the key is not refused either.
			k2 := newKey(t)
			if err := setLinkageKey(context.Background(), op, k2.ID()); err != nil {
				t.Fatal(err)
			}
			if _, err := qhinv1.NewGatewayClient(cc).DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT",
				Requester: requester(), Demographics: dorisAtP2, LocatorTokens: []*qhinv1.LocatorTokens{k2.QueryTokens(dorisAtP2)}}); err != nil {
				t.Fatalf("round %d: query with tokens under a key just added, through follower %s: %v", round, b.ID, err)
			}
		}
	}
}

func TestLocator_TargetedRoutingAndFallback(t *testing.T) {
	n, key, _ := locatorNetwork(t, 1, "")
	put(t, n, 1, "p2-doris", dorisAtP2)
	put(t, n, 2, "p3-ellen", ellenAtP3)
	waitLocator(t, n, "publish")
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()

	// Doris's tokens hit p2 only: p3 is not asked, and the answer says why.
	resp := discoverWithTokens(t, gw, dorisAtP2, key)
	if got := statuses(resp); got != "p2:OK p3:SKIPPED(no record-locator hit)" {
		t.Errorf("targeted query: %s", got)
	}
	if len(resp.Persons) != 1 {
		t.Errorf("targeted query found %d persons", len(resp.Persons))
	}
	// Without tokens, or with tokens nobody holds, every member is asked.
	if got := statuses(discoverWithTokens(t, gw, dorisAtP2, nil)); got != "p2:OK p3:NO_MATCH" {
		t.Errorf("query without tokens: %s", got)
	}
	if got := statuses(discoverWithTokens(t, gw, nobody, key)); got != "p2:NO_MATCH p3:NO_MATCH" {
		t.Errorf("query without a hit: %s", got)
	}

	// Ellen as p2 wrote her gives no token in common with p3's record:
	// the first query falls back to every member, p3 matches her and
	// records the query's tokens that its matcher confirmed, so the next
	// query goes to p3 alone.
	resp = discoverWithTokens(t, gw, ellenAtP2, key)
	if got := statuses(resp); got != "p2:NO_MATCH p3:OK" {
		t.Fatalf("first query for Ellen: %s", got)
	}
	if d := resp.Persons[0].Links[0].Explanation.Decision; d != qhinv1.MatchDecision_MATCH_DECISION_MATCH {
		t.Fatalf("p3's candidate is %v, want a match", d)
	}
	waitFor(t, 30*time.Second, "p3 publishes the confirmed tokens", func() bool {
		_, _, aliases, err := n.Participants[2].Server.Store().PatientTokensOf("p3-ellen")
		return err == nil && len(aliases) > 0
	})
	waitLocator(t, n, "confirmation")
	_, _, aliases, _ := n.Participants[2].Server.Store().PatientTokensOf("p3-ellen")
	// The name, sound and place tokens agreed; p3 has no phone to agree.
	if len(aliases) != 3 {
		t.Errorf("p3 recorded %d confirmed tokens, want 3 (not the phone's)", len(aliases))
	}
	if got := statuses(discoverWithTokens(t, gw, ellenAtP2, key)); got != "p2:SKIPPED(no record-locator hit) p3:OK" {
		t.Errorf("second query for Ellen: %s", got)
	}
}

func TestLocator_TargetedOnlyWithoutAHitAsksNobody(t *testing.T) {
	n, key, _ := locatorNetwork(t, 1, broker.RoutingTargetedOnly)
	put(t, n, 1, "p2-doris", dorisAtP2)
	waitLocator(t, n, "publish")
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	if got := statuses(discoverWithTokens(t, gw, dorisAtP2, key)); got != "p2:OK p3:SKIPPED(no record-locator hit)" {
		t.Errorf("targeted-only hit: %s", got)
	}
	resp := discoverWithTokens(t, gw, nobody, key)
	if got := statuses(resp); got != "p2:SKIPPED(no record-locator hit) p3:SKIPPED(no record-locator hit)" {
		t.Errorf("targeted-only without a hit: %s", got)
	}
	if len(resp.Persons) != 0 {
		t.Errorf("found %d persons asking nobody", len(resp.Persons))
	}
}

func TestLocator_MemberPublishesOnlyForItself(t *testing.T) {
	n, key, _ := locatorNetwork(t, 1, "")
	waitLocator(t, n, "start")
	loc := qhinv1.NewLocatorClient(dial(t, n, n.ParticipantSource(1)))
	tokens := key.QueryTokens(dorisAtP2).Tokens
	for _, call := range []func() error{
		func() error {
			_, err := loc.PublishTokens(callCtx(t), &qhinv1.PublishTokensRequest{ParticipantId: "p3", KeyId: key.ID(), Tokens: tokens})
			return err
		},
		func() error {
			_, err := loc.WithdrawTokens(callCtx(t), &qhinv1.WithdrawTokensRequest{ParticipantId: "p3", KeyId: key.ID(), Tokens: tokens})
			return err
		},
	} {
		err := call()
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "participant_id") {
			t.Errorf("p2 acting for p3: %v, want PermissionDenied naming participant_id", err)
		}
	}
	holdersEverywhere(t, n, key, dorisAtP2, "")
	// Naming itself, or nobody, it may.
	if _, err := loc.PublishTokens(callCtx(t), &qhinv1.PublishTokensRequest{ParticipantId: "p2", KeyId: key.ID(), Tokens: tokens}); err != nil {
		t.Fatal(err)
	}
	holdersEverywhere(t, n, key, dorisAtP2, "p2")
	// An operator is no member.
	_, err := qhinv1.NewLocatorClient(dial(t, n, n.Operator())).PublishTokens(callCtx(t),
		&qhinv1.PublishTokensRequest{KeyId: key.ID(), Tokens: tokens})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("operator publishing: %v", err)
	}
}

func TestLocator_BadInputNamesTheField(t *testing.T) {
	n, key, logs := locatorNetwork(t, 1, "")
	waitLocator(t, n, "start")
	conn := dial(t, n, n.ParticipantSource(1))
	loc, gw := qhinv1.NewLocatorClient(conn), conn.Gateway()
	good := key.QueryTokens(dorisAtP2).Tokens
	many := make([][]byte, 10_001)
	for i := range many {
		many[i] = good[0]
	}
	const secretKeyID = "5ec7e75ec7e75ec7"
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"oversized batch", func() error {
			_, err := loc.PublishTokens(callCtx(t), &qhinv1.PublishTokensRequest{KeyId: key.ID(), Tokens: many})
			return err
		}, "tokens: at most 10000"},
		{"empty batch", func() error {
			_, err := loc.WithdrawTokens(callCtx(t), &qhinv1.WithdrawTokensRequest{KeyId: key.ID()})
			return err
		}, "tokens: at least one"},
		{"short token", func() error {
			_, err := loc.PublishTokens(callCtx(t), &qhinv1.PublishTokensRequest{KeyId: key.ID(), Tokens: [][]byte{good[0], good[1][:15]}})
			return err
		}, "tokens[1]: must be 16 bytes"},
		{"malformed key id", func() error {
			_, err := loc.PublishTokens(callCtx(t), &qhinv1.PublishTokensRequest{KeyId: "Ellen Blackwood", Tokens: good})
			return err
		}, "key_id: must be 16 lowercase hex digits"},
		{"unknown key id", func() error {
			_, err := loc.PublishTokens(callCtx(t), &qhinv1.PublishTokensRequest{KeyId: secretKeyID, Tokens: good})
			return err
		}, "key_id: not a linkage key of the network"},
		{"query with a short token", func() error {
			_, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
				Demographics: dorisAtP2, LocatorTokens: []*qhinv1.LocatorTokens{{KeyId: key.ID(), Tokens: [][]byte{good[0][:8]}}}})
			return err
		}, "locator_tokens[0].tokens[0]: must be 16 bytes"},
		{"query with an unknown key id", func() error {
			_, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
				Demographics: dorisAtP2, LocatorTokens: []*qhinv1.LocatorTokens{key.QueryTokens(dorisAtP2), {KeyId: secretKeyID, Tokens: good}}})
			return err
		}, "locator_tokens[1].key_id: not a linkage key"},
		{"query with a malformed key id", func() error {
			_, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
				Demographics: dorisAtP2, LocatorTokens: []*qhinv1.LocatorTokens{{KeyId: "BLACKWOOD", Tokens: good}}})
			return err
		}, "locator_tokens[0].key_id: must be 16 lowercase hex digits"},
		{"query with too many token sets", func() error {
			sets := make([]*qhinv1.LocatorTokens, 33)
			for i := range sets {
				sets[i] = key.QueryTokens(dorisAtP2)
			}
			_, err := gw.DiscoverPatients(callCtx(t), &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
				Demographics: dorisAtP2, LocatorTokens: sets})
			return err
		}, "locator_tokens: must hold at most 32 items"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			msg := status.Convert(err).Message()
			if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(msg, tt.field) {
				t.Fatalf("%v, want InvalidArgument starting %q", err, tt.field)
			}
			for _, v := range []string{"Ellen", "BLACKWOOD", secretKeyID} {
				if strings.Contains(msg, v) {
					t.Errorf("message %q echoes the caller's value", msg)
				}
			}
		})
	}
	// A retired key takes withdrawals only.
	opConn := dial(t, n, n.Operator())
	if _, err := qhinv1.NewLocatorClient(opConn).SetLinkageKey(callCtx(t), &qhinv1.SetLinkageKeyRequest{
		KeyId: key.ID(), State: qhinv1.LinkageKeyState_LINKAGE_KEY_STATE_RETIRED}); err != nil {
		t.Fatal(err)
	}
	if _, err := loc.PublishTokens(callCtx(t), &qhinv1.PublishTokensRequest{KeyId: key.ID(), Tokens: good}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("publish under a retired key: %v", err)
	}
	if _, err := loc.WithdrawTokens(callCtx(t), &qhinv1.WithdrawTokensRequest{KeyId: key.ID(), Tokens: good}); err != nil {
		t.Errorf("withdraw under a retired key: %v", err)
	}
	if strings.Contains(logs.String(), secretKeyID) {
		t.Error("the log holds a key id a caller made up")
	}
}

// TestLocator_BrokersStoreNoDemographics runs discovery queries with and
// without tokens, snapshots every broker, then reads every file under
// every broker's data directory for the seeded persons' names and birth
// dates, as written, normalized, as protobuf bytes and as UTF-16.
func TestLocator_BrokersStoreNoDemographics(t *testing.T) {
	n, key, _ := locatorNetwork(t, 3, "")
	seeded := []*qhinv1.Demographics{ellenAtP2, ellenAtP3, dorisAtP2}
	put(t, n, 1, "p2-ellen", ellenAtP2)
	put(t, n, 1, "p2-doris", dorisAtP2)
	put(t, n, 2, "p3-ellen", ellenAtP3)
	waitLocator(t, n, "publish")
	gw := dial(t, n, n.ParticipantSource(0)).Gateway()
	for _, d := range seeded {
		discoverWithTokens(t, gw, d, key)
		discoverWithTokens(t, gw, d, nil)
	}
	waitLocator(t, n, "confirmations")
	for _, b := range n.Brokers {
		if err := b.Server.Node().Snapshot(); err != nil {
			t.Fatalf("snapshot %s: %v", b.ID, err)
		}
	}

	var needles [][]byte
	add := func(s string) {
		if s == "" {
			return
		}
		needles = append(needles, []byte(s), []byte(strings.ToLower(s)), []byte(strings.ToUpper(s)))
		var u16 []byte
		for _, r := range utf16.Encode([]rune(s)) {
			u16 = append(u16, byte(r), byte(r>>8))
		}
		needles = append(needles, u16)
	}
	for _, d := range seeded {
		r := match.Normalize(d)
		for _, s := range []string{d.Given, d.Family, d.BirthDate, d.Phone, r.Family, strings.ReplaceAll(r.Family, " ", ""), r.Phone,
			strings.ReplaceAll(d.BirthDate, "-", ""), d.Address.Lines[0], r.Street} {
			add(s)
		}
		for _, g := range r.Given {
			if len(g) >= 5 {
				add(g)
			}
		}
		for _, part := range strings.Fields(r.Family) {
			add(part)
		}
		b, _ := proto.Marshal(d)
		needles = append(needles, b)
		b, _ = proto.Marshal(&qhinv1.Demographics{Family: d.Family})
		needles = append(needles, b)
	}

	// Positive control: the same search finds the persons in the members'
	// own data.
	if found := search(t, n.Participants[1].Dir, needles); len(found) == 0 {
		t.Fatal("the search finds nothing in p2's own records: it cannot fail")
	}
	files := 0
	for _, b := range n.Brokers {
		dir := filepath.Join(b.Dir, "data")
		filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				files++
			}
			return nil
		})
		if found := search(t, dir, needles); len(found) > 0 {
			t.Errorf("broker %s stores demographics: %v", b.ID, found)
		}
	}
	if files < 3*4 {
		t.Errorf("searched %d files under the brokers' data directories, want their logs, states and snapshots", files)
	}
}

// search returns "file: needle" for every needle found in a file under dir.
func search(t *testing.T, dir string, needles [][]byte) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // a temporary file gone since the walk listed it
		}
		if err != nil {
			return err
		}
		for _, nd := range needles {
			if bytes.Contains(b, nd) {
				found = append(found, filepath.Base(path)+": "+strings.ToValidUTF8(string(nd), "?"))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}
