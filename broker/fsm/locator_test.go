package fsm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

const (
	keyA = "0123456789abcdef"
	keyB = "fedcba9876543210"
)

func tok(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:TokenSize]
}

func toks(names ...string) [][]byte {
	var out [][]byte
	for _, n := range names {
		out = append(out, tok(n))
	}
	return out
}

func setKey(t *testing.T, id string, st qhinv1.LinkageKeyState) *qhinv1.Command {
	return mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_LOCATOR_SET_KEY, "", t0, &qhinv1.LinkageKey{KeyId: id, State: st})
}

func publish(t *testing.T, member, key string, tokens [][]byte) *qhinv1.Command {
	return mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_LOCATOR_PUBLISH, "", t0,
		&qhinv1.LocatorUpdate{ParticipantId: member, KeyId: key, Tokens: tokens})
}

func withdraw(t *testing.T, member, key string, tokens [][]byte) *qhinv1.Command {
	return mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_LOCATOR_WITHDRAW, "", t0,
		&qhinv1.LocatorUpdate{ParticipantId: member, KeyId: key, Tokens: tokens})
}

const (
	activeKey  = qhinv1.LinkageKeyState_LINKAGE_KEY_STATE_ACTIVE
	retiredKey = qhinv1.LinkageKeyState_LINKAGE_KEY_STATE_RETIRED
)

// locatorState is a state machine with members p1, p2 (active), p3
// (retired) and key A active.
func locatorState(t *testing.T) *applier {
	a := &applier{t: t, f: openFSM(t)}
	for _, c := range []*qhinv1.Command{register(t, "p1", ""), register(t, "p2", ""), register(t, "p3", ""),
		setStatus(t, "p3", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED), setKey(t, keyA, activeKey)} {
		if r := a.apply(c); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	return a
}

func holders(t *testing.T, f *FSM, key string, names ...string) string {
	t.Helper()
	got, err := f.LocatorHolders([]TokenSet{{KeyID: key, Tokens: toks(names...)}})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(got, ",")
}

func TestLocator_PublishAndWithdraw(t *testing.T) {
	a := locatorState(t)
	if r := a.apply(publish(t, "p1", keyA, toks("ann", "bob", "ann"))); r.Err != nil || r.Value.(*qhinv1.LocatorUpdateResult).Changed != 2 {
		t.Fatalf("publish: %v %v", r.Value, r.Err)
	}
	a.apply(publish(t, "p2", keyA, toks("bob", "cid")))
	for _, tt := range []struct {
		tokens []string
		want   string
	}{
		{[]string{"ann"}, "p1"},
		{[]string{"bob"}, "p1,p2"},
		{[]string{"cid", "ann"}, "p1,p2"},
		{[]string{"dan"}, ""},
	} {
		if got := holders(t, a.f, keyA, tt.tokens...); got != tt.want {
			t.Errorf("holders of %v = %q, want %q", tt.tokens, got, tt.want)
		}
	}
	if n, _ := a.f.LocatorCount("p1"); n != 2 {
		t.Errorf("p1 holds %d tokens, want 2", n)
	}
	// Withdrawing removes only the member's own entries, and what is not
	// there counts for nothing.
	if r := a.apply(withdraw(t, "p1", keyA, toks("bob", "zed"))); r.Err != nil || r.Value.(*qhinv1.LocatorUpdateResult).Changed != 1 {
		t.Fatalf("withdraw: %v %v", r.Value, r.Err)
	}
	if got := holders(t, a.f, keyA, "bob"); got != "p2" {
		t.Errorf("bob after p1 withdrew: %q, want p2", got)
	}
	a.apply(withdraw(t, "p1", keyA, toks("ann")))
	counts, _ := a.f.LocatorCounts()
	if len(counts) != 1 || counts[0].ParticipantId != "p2" || counts[0].Tokens != 2 {
		t.Errorf("counts = %v, want p2:2 only", counts)
	}
	// Tokens are kept apart by key.
	a.apply(setKey(t, keyB, activeKey))
	a.apply(publish(t, "p1", keyB, toks("bob")))
	if got := holders(t, a.f, keyA, "bob"); got != "p2" {
		t.Errorf("bob under key A = %q, want p2", got)
	}
	if got := holders(t, a.f, keyB, "bob"); got != "p1" {
		t.Errorf("bob under key B = %q, want p1", got)
	}
}

func TestLocator_RefusedCommandsChangeNothing(t *testing.T) {
	long := make([][]byte, MaxLocatorTokens+1)
	for i := range long {
		long[i] = tok(strconv.Itoa(i))
	}
	tests := []struct {
		name string
		cmd  func(t *testing.T) *qhinv1.Command
		want error
	}{
		{"unknown key", func(t *testing.T) *qhinv1.Command { return publish(t, "p1", keyB, toks("x")) }, ErrInvalid},
		{"malformed key id", func(t *testing.T) *qhinv1.Command { return publish(t, "p1", "ABC", toks("x")) }, ErrInvalid},
		{"short token", func(t *testing.T) *qhinv1.Command { return publish(t, "p1", keyA, [][]byte{tok("x"), {1, 2, 3}}) }, ErrInvalid},
		{"no tokens", func(t *testing.T) *qhinv1.Command { return publish(t, "p1", keyA, nil) }, ErrInvalid},
		{"too many tokens", func(t *testing.T) *qhinv1.Command { return publish(t, "p1", keyA, long) }, ErrInvalid},
		{"unknown member", func(t *testing.T) *qhinv1.Command { return publish(t, "p9", keyA, toks("x")) }, ErrNotFound},
		{"retired member publishes", func(t *testing.T) *qhinv1.Command { return publish(t, "p3", keyA, toks("x")) }, ErrConflict},
		{"set key with a bad state", func(t *testing.T) *qhinv1.Command { return setKey(t, keyB, 0) }, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := locatorState(t)
			before := a.f.Digests()
			r := a.apply(tt.cmd(t))
			if !errors.Is(r.Err, tt.want) {
				t.Fatalf("err = %v, want %v", r.Err, tt.want)
			}
			after := a.f.Digests()
			if diff := before.Diff(after); len(diff) > 0 {
				t.Errorf("refused command changed tables %v", diff)
			}
		})
	}
}

func TestLocator_RetiredKeyTakesWithdrawalsOnly(t *testing.T) {
	a := locatorState(t)
	a.apply(publish(t, "p1", keyA, toks("ann", "bob")))
	if r := a.apply(setKey(t, keyA, retiredKey)); r.Err != nil || r.Value.(*qhinv1.LinkageKey).Number != 1 {
		t.Fatalf("retire: %v %v", r.Value, r.Err)
	}
	if r := a.apply(publish(t, "p1", keyA, toks("cid"))); !errors.Is(r.Err, ErrConflict) {
		t.Errorf("publish under a retired key: %v, want conflict", r.Err)
	}
	if got := holders(t, a.f, keyA, "ann"); got != "p1" {
		t.Errorf("a retired key's tokens are still found until withdrawn: %q", got)
	}
	if r := a.apply(withdraw(t, "p1", keyA, toks("ann", "bob"))); r.Err != nil {
		t.Fatal(r.Err)
	}
	if got := holders(t, a.f, keyA, "ann"); got != "" {
		t.Errorf("after withdrawal: %q", got)
	}
	r := a.apply(setKey(t, keyB, activeKey))
	if k := r.Value.(*qhinv1.LinkageKey); k.Number != 2 {
		t.Errorf("second key numbered %d, want 2", k.Number)
	}
	if _, err := a.f.LocatorHolders([]TokenSet{{KeyID: "aaaaaaaaaaaaaaaa", Tokens: toks("x")}, {KeyID: keyB}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("lookup under an unknown key: %v, want not found", err)
	} else if ue := new(UnknownKeyError); !errors.As(err, &ue) || ue.Set != 0 {
		t.Errorf("lookup error %v does not name set 0", err)
	}
}

func TestLocator_OlderBrokerRefusesLocatorCommands(t *testing.T) {
	f, err := Open(filepath.Join(t.TempDir(), "fsm.db"), Options{MaxCommandVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if r := (&applier{t: t, f: f}).apply(setKey(t, keyA, activeKey)); !errors.Is(r.Err, ErrUnknownCommand) {
		t.Errorf("err = %v, want unknown command", r.Err)
	}
}

func TestLocator_TablesTravelInSnapshotsAndDigests(t *testing.T) {
	src := locatorState(t)
	src.apply(publish(t, "p1", keyA, toks("ann", "bob")))
	src.apply(publish(t, "p2", keyA, toks("bob")))
	data := snapshotOf(t, src.f)

	dst := openFSM(t)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if got := holders(t, dst, keyA, "ann", "bob"); got != "p1,p2" {
		t.Errorf("restored locator: %q, want p1,p2", got)
	}
	want, got := src.f.Digests(), dst.Digests()
	for _, name := range []string{"locator", "locator_keys", "locator_counts"} {
		if got.Map()[name] != want.Map()[name] || !strings.HasPrefix(want.Map()[name], map[string]string{
			"locator": "3:", "locator_keys": "1:", "locator_counts": "2:"}[name]) {
			t.Errorf("table %s: restored %s, source %s", name, got.Map()[name], want.Map()[name])
		}
	}
	if _, err := dst.Verify(); err != nil {
		t.Errorf("restored state does not verify: %v", err)
	}
	// The digests see a locator change: the same entries on another state
	// give the same digest, one more entry another.
	other := locatorState(t)
	other.apply(publish(t, "p1", keyA, toks("ann", "bob")))
	other.apply(publish(t, "p2", keyA, toks("bob")))
	if d := other.f.Digests().Diff(src.f.Digests()); len(d) > 0 {
		t.Errorf("same commands, tables %v differ", d)
	}
	other.apply(publish(t, "p2", keyA, toks("cid")))
	if d := other.f.Digests().Diff(src.f.Digests()); !slices.Equal(d, []string{"locator", "locator_counts"}) {
		t.Errorf("one more token: tables %v differ, want locator and locator_counts", d)
	}
}

func TestLocator_FileWithoutLocatorTablesIsMigrated(t *testing.T) {
	path, _ := stateWith(t, 5)
	f, _ := Open(path, Options{})
	want := f.Digests()
	f.Close()
	// Make it a schema 2 file: no locator tables, no digests of them.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		for _, b := range [][]byte{bucketLocator, bucketLocatorKeys, bucketLocatorCounts} {
			tx.DeleteBucket(b)
			meta.Delete(digestKey(b))
		}
		return meta.Put(keySchema, u64(2))
	})
	db.Close()
	f, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("open a schema 2 file: %v", err)
	}
	defer f.Close()
	if got := f.Digests(); got != want {
		t.Errorf("migrated digests %v, want %v", got.Map(), want.Map())
	}
	r := (&applier{t: t, f: f, next: f.AppliedIndex()}).apply(setKey(t, keyA, activeKey))
	if r.Err != nil {
		t.Fatal(r.Err)
	}
}

func BenchmarkApplyPublish(b *testing.B) {
	f, err := Open(filepath.Join(b.TempDir(), "state.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var index uint64
	apply := func(typ qhinv1.CommandType, p proto.Message) {
		c, err := NewCommand(typ, "", t0, p)
		if err != nil {
			b.Fatal(err)
		}
		data, _ := Encode(c)
		index++
		if r := f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}).(*Result); r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	apply(qhinv1.CommandType_COMMAND_TYPE_REGISTER_PARTICIPANT, &qhinv1.Participant{Id: "p1", SpiffeId: "spiffe://qhin.test/participant/p1", Endpoint: "127.0.0.1:1"})
	apply(qhinv1.CommandType_COMMAND_TYPE_LOCATOR_SET_KEY, &qhinv1.LinkageKey{KeyId: keyA, State: activeKey})
	const batch = 10_000
	n := 0
	for b.Loop() {
		tokens := make([][]byte, batch)
		for j := range tokens {
			tokens[j] = tok(strconv.Itoa(n))
			n++
		}
		apply(qhinv1.CommandType_COMMAND_TYPE_LOCATOR_PUBLISH, &qhinv1.LocatorUpdate{ParticipantId: "p1", KeyId: keyA, Tokens: tokens})
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/token")
	b.ReportMetric(float64(fileSize(b, f.Path()))/float64(n), "file-bytes/token")
}

func fileSize(b *testing.B, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return fi.Size()
}
