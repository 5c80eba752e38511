package fsm

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func rotate(t *testing.T, id uint32, keep uint32, at time.Time) *qhinv1.Command {
	return mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_ROTATE_LINK_KEY, "", at, &qhinv1.LinkKey{
		Id: id, Secret: bytes.Repeat([]byte{byte(id)}, LinkKeySize), Keep: keep})
}

func keyIDs(t *testing.T, f *FSM) []uint32 {
	t.Helper()
	ks, err := f.LinkKeys()
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint32
	for _, k := range ks {
		ids = append(ids, k.Id)
	}
	return ids
}

func TestLinkKeys_RotateKeepsTheNewest(t *testing.T) {
	a := &applier{t: t, f: openFSM(t)}
	if got := keyIDs(t, a.f); len(got) != 0 {
		t.Fatalf("a new state holds keys %v", got)
	}
	v := a.f.LinkKeysVersion()
	r := a.apply(rotate(t, 1, 2, t0))
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	res := r.Value.(*qhinv1.LinkKey)
	if res.Id != 1 || len(res.Secret) != 0 || !res.Created.AsTime().Equal(t0) {
		t.Errorf("result %v: want id 1, the command's time and no secret", res)
	}
	if a.f.LinkKeysVersion() == v {
		t.Error("the link keys version did not move")
	}
	ks, _ := a.f.LinkKeys()
	if !bytes.Equal(ks[0].Secret, bytes.Repeat([]byte{1}, LinkKeySize)) || !ks[0].Created.AsTime().Equal(t0) {
		t.Errorf("stored key %v", ks[0])
	}
	for id := uint32(2); id <= 5; id++ {
		if r := a.apply(rotate(t, id, 3, t0.Add(time.Duration(id)*time.Hour))); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if got := keyIDs(t, a.f); !slices.Equal(got, []uint32{5, 4, 3}) {
		t.Errorf("keys %v, want the newest 3, newest first", got)
	}
	v = a.f.LinkKeysVersion()
	a.apply(register(t, "p1", ""))
	if a.f.LinkKeysVersion() != v {
		t.Error("a directory command moved the link keys version")
	}
}

func TestLinkKeys_RefusedRotations(t *testing.T) {
	a := &applier{t: t, f: openFSM(t)}
	a.apply(rotate(t, 1, 2, t0))
	short := rotate(t, 2, 2, t0)
	short.Payload, _ = proto.Marshal(&qhinv1.LinkKey{Id: 2, Secret: []byte("short"), Keep: 2})
	for name, tc := range map[string]struct {
		cmd  *qhinv1.Command
		want error
	}{
		"same id again":    {rotate(t, 1, 2, t0), ErrConflict},
		"skips an id":      {rotate(t, 3, 2, t0), ErrConflict},
		"keeps too few":    {rotate(t, 2, 1, t0), ErrInvalid},
		"secret too short": {short, ErrInvalid},
	} {
		if r := a.apply(tc.cmd); !errors.Is(r.Err, tc.want) {
			t.Errorf("%s: %v, want %v", name, r.Err, tc.want)
		}
	}
	if got := keyIDs(t, a.f); !slices.Equal(got, []uint32{1}) {
		t.Errorf("refused rotations changed the keys: %v", got)
	}
}

func TestLinkKeys_OldBrokerRefusesTheCommand(t *testing.T) {
	f, err := Open(t.TempDir()+"/fsm.db", Options{MaxCommandVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := rotate(t, 1, 2, t0)
	if Version(cmd) != 2 {
		t.Errorf("a rotation's version is %d, want 2", Version(cmd))
	}
	if r := (&applier{t: t, f: f}).apply(cmd); !errors.Is(r.Err, ErrUnknownCommand) {
		t.Errorf("a version 1 broker applied a rotation: %v", r.Err)
	}
}

func TestLinkKeys_InDigestsAndSnapshots(t *testing.T) {
	a := &applier{t: t, f: openFSM(t)}
	b := &applier{t: t, f: openFSM(t)}
	a.apply(rotate(t, 1, 2, t0))
	b.apply(rotate(t, 1, 2, t0.Add(time.Second)))
	if diff := a.f.Digests().Diff(b.f.Digests()); !slices.Equal(diff, []string{"link_keys"}) {
		t.Errorf("diff %v, want link_keys", diff)
	}
	dst := openFSM(t)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(snapshotOf(t, a.f)))); err != nil {
		t.Fatal(err)
	}
	if got := keyIDs(t, dst); !slices.Equal(got, []uint32{1}) {
		t.Errorf("restored keys %v", got)
	}
	if diff := a.f.Digests().Diff(dst.Digests()); len(diff) != 0 {
		t.Errorf("restored digests differ in %v", diff)
	}
}

// TestOpen_SchemaTwoFileGetsTheLinkKeyTable opens a state file of the
// layout before link keys: it gains the empty table, its other digests are
// still checked, and a snapshot of it restores.
func TestOpen_SchemaTwoFileGetsTheLinkKeyTable(t *testing.T) {
	path, _ := stateWith(t, 5)
	f, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := f.Digests()
	f.Close()
	asSchemaTwo := func(path string, damage bool) {
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.Update(func(tx *bolt.Tx) error {
			if err := tx.DeleteBucket(bucketLinkKeys); err != nil {
				return err
			}
			meta := tx.Bucket(bucketMeta)
			meta.Delete(digestKey(bucketLinkKeys))
			if damage {
				tx.Bucket(bucketParticipants).Put([]byte("intruder"), []byte("x"))
			}
			return meta.Put(keySchema, u64(2))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	asSchemaTwo(path, false)
	// A snapshot of the schema 2 file restores.
	var snap bytes.Buffer
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.View(func(tx *bolt.Tx) error { _, err := writeSnapshot(tx, &snap, 0); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	restored := openFSM(t)
	if err := restored.Restore(io.NopCloser(&snap)); err != nil {
		t.Fatalf("restore a schema 2 snapshot: %v", err)
	}
	if diff := restored.Digests().Diff(want); len(diff) != 0 {
		t.Errorf("restored schema 2 snapshot differs in %v", diff)
	}

	f, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("open a schema 2 file: %v", err)
	}
	if got := f.Digests(); got != want {
		t.Errorf("digests %v, want %v", got.Map(), want.Map())
	}
	if ks, err := f.LinkKeys(); err != nil || len(ks) != 0 {
		t.Errorf("link keys %v, %v", ks, err)
	}
	f.Close()

	damaged, _ := stateWith(t, 5)
	asSchemaTwo(damaged, true)
	if _, err := Open(damaged, Options{}); !errors.Is(err, ErrDamaged) {
		t.Errorf("a damaged schema 2 file opened: %v", err)
	}
}

func TestApply_PurposeListsAreDefaultDeny(t *testing.T) {
	update := func(t *testing.T, initiate ...string) *qhinv1.Command {
		return mustCommand(t, qhinv1.CommandType_COMMAND_TYPE_UPDATE_PARTICIPANT, "", t0, &qhinv1.Participant{
			Id: "p1", Endpoint: "127.0.0.1:9000", InitiatePurposes: initiate})
	}
	for _, tt := range []struct {
		name          string
		before, after []string
		want          bool
	}{
		{"empty is none, so emptying narrows", []string{"T-TREAT"}, nil, true},
		{"all widens", []string{"T-TREAT"}, []string{"all"}, false},
		{"from all to a code narrows", []string{"all"}, []string{"T-TREAT"}, true},
		{"from all to none narrows", []string{"all"}, nil, true},
		{"adding a code widens", []string{"T-TREAT"}, []string{"T-TREAT", "T-IAS"}, false},
		{"from none to a code widens", nil, []string{"T-TREAT"}, false},
		{"swapping codes narrows", []string{"T-TREAT"}, []string{"T-IAS"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := &applier{t: t, f: openFSM(t)}
			a.apply(register(t, "p1", ""))
			if r := a.apply(update(t, tt.before...)); r.Err != nil {
				t.Fatal(r.Err)
			}
			r := a.apply(update(t, tt.after...))
			if r.Err != nil || r.Restricts != tt.want {
				t.Errorf("restricts %v (%v), want %v", r.Restricts, r.Err, tt.want)
			}
		})
	}
}
