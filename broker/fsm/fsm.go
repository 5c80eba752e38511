package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Buckets, one per table.
var (
	bucketMeta         = []byte("meta")
	bucketParticipants = []byte("participants")
	bucketBrokers      = []byte("brokers")
	// bucketRequests maps an idempotency key to the stored result of the
	// command that carried it.
	bucketRequests = []byte("requests")
	// bucketRequestTimes orders idempotency keys by command time, for pruning.
	bucketRequestTimes = []byte("request_times")

	// The record locator (locator.go).
	bucketLocator       = []byte("locator")
	bucketLocatorKeys   = []byte("locator_keys")
	bucketLocatorCounts = []byte("locator_counts")

	// bucketLinkKeys holds the keys brokers seal links with (linkkeys.go).
	bucketLinkKeys = []byte("link_keys")

	// bucketConsent holds patients' consent directives (consent.go).
	bucketConsent = []byte("consent")

	// tablesV1 are the tables every file of any schema has.
	tablesV1 = [][]byte{bucketMeta, bucketParticipants, bucketBrokers, bucketRequests, bucketRequestTimes}

	// tablesV3 are the tables schema 3 added; a file of schema 2 gets them
	// empty.
	tablesV3 = [][]byte{bucketLocator, bucketLocatorKeys, bucketLocatorCounts, bucketLinkKeys}

	// tablesV4 are the tables schema 4 added.
	tablesV4 = [][]byte{bucketConsent}

	// tablesSince are the tables each schema added, from schema 3 on.
	tablesSince = map[uint64][][]byte{3: tablesV3, 4: tablesV4}

	tables = [][]byte{bucketMeta, bucketParticipants, bucketBrokers, bucketRequests, bucketRequestTimes,
		bucketLocator, bucketLocatorKeys, bucketLocatorCounts, bucketLinkKeys, bucketConsent}

	keyAppliedIndex = []byte("applied_index")
	keySchema       = []byte("schema")
)

// schemaVersion is the layout of the bbolt file. Version 2 added the table
// digests; files of version 1 get them computed when opened or restored.
// Version 3 added the record locator's tables and the link key table; files of
// version 2 get them, empty. Version 4 added the consent table.
const schemaVersion = 4

// RequestRetention is how long an idempotency key is remembered, measured in
// command time.
const RequestRetention = 24 * time.Hour

// Options tune a state machine. The zero value is the production setting.
type Options struct {
	Logger *slog.Logger
	// MaxCommandVersion is the newest command version this broker applies;
	// CommandVersion when zero. Tests lower or raise it to act as an older
	// or newer broker.
	MaxCommandVersion uint32
	// OpenFile opens the state file (bbolt's Options.OpenFile); tests use it
	// to make writes fail.
	OpenFile func(string, int, os.FileMode) (*os.File, error)
}

// FSM is the broker's state machine over one bbolt file. It implements
// raft.BatchingFSM; reads may run concurrently with Apply.
type FSM struct {
	path string
	log  *slog.Logger
	opts Options

	// mu guards db against the swap in Restore; Apply, reads and Snapshot
	// hold it shared.
	mu sync.RWMutex
	db *bolt.DB
	// applyMu orders applies against Replace, which must see no entry
	// applied while it fetches the leader's state.
	applyMu sync.Mutex

	applied         atomic.Uint64
	dirVersion      atomic.Uint64
	linkKeysVersion atomic.Uint64
	digests         atomic.Pointer[Digests]
	history         history
	failed          atomic.Pointer[failure]
	changed         atomic.Pointer[chan struct{}]
	// OnFailure, when set before use, is called once each time the state
	// machine fails.
	onFailure atomic.Pointer[func(error)]
}

type failure struct{ err error }

var _ raft.BatchingFSM = (*FSM)(nil)

func (f *FSM) boltOptions() *bolt.Options {
	return &bolt.Options{
		Timeout: 5 * time.Second,
		// Snapshot holds a read transaction while it streams; a large initial
		// map keeps writers from waiting on it to grow the file.
		InitialMmapSize: 1 << 30,
		// The state file is not synced on every commit. The Raft log is the
		// durable record of what was acknowledged (it is synced before an
		// entry commits); the state file only caches its result. A process
		// crash loses nothing (the writes are in the page cache); after a
		// machine crash the file may be behind or torn, and Open's full
		// read against the table digests, the applied index and the newest
		// snapshot tell the node to replay the log or rebuild from the
		// snapshot (cluster.Open). This takes two fsyncs off every write.
		NoSync:         true,
		NoFreelistSync: true,
		OpenFile:       f.opts.OpenFile,
	}
}

// Open opens or creates the state file at path. A file that is damaged
// (truncated, bad pages, content that does not match its digests) is an
// error wrapping ErrDamaged: the caller sets it aside and rebuilds the state
// from Raft's snapshot and log.
func Open(path string, opts Options) (*FSM, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxCommandVersion == 0 {
		opts.MaxCommandVersion = CommandVersion
	}
	f := &FSM{path: path, log: opts.Logger, opts: opts}
	f.signal()
	db, err := OpenBolt(path, f.boltOptions())
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	var d Digests
	err = guard(path, func() error {
		if err := initDB(db); err != nil {
			return err
		}
		return db.View(func(tx *bolt.Tx) error {
			var err error
			d, err = verifyTx(tx)
			return err
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	f.db = db
	f.applied.Store(d.Index)
	f.digests.Store(&d)
	return f, nil
}

// initDB creates the tables of a new file, and the digests of a file of the
// previous layout.
func initDB(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range tables {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return migrate(tx)
	})
}

// migrate brings a file's layout to schemaVersion: it computes the table
// digests of a version 1 file, and adds the (empty) tables a file of
// version 2 or later lacks with their digests, keeping the digests it has
// for checking.
func migrate(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	v := meta.Get(keySchema)
	switch {
	case v == nil:
	case len(v) != 8:
		return fmt.Errorf("%w: schema %x", ErrDamaged, v)
	case binary.BigEndian.Uint64(v) == schemaVersion:
		return nil
	case binary.BigEndian.Uint64(v) >= 2 && binary.BigEndian.Uint64(v) < schemaVersion:
		from := binary.BigEndian.Uint64(v)
		for schema := from + 1; schema <= schemaVersion; schema++ {
			for _, name := range tablesSince[schema] {
				b, err := tx.CreateBucketIfNotExists(name)
				if err != nil {
					return err
				}
				if k, _ := b.Cursor().First(); k != nil {
					return fmt.Errorf("%w: a schema %d file holds entries in table %s", ErrDamaged, from, name)
				}
				if err := meta.Put(digestKey(name), make([]byte, 8+sha256.Size)); err != nil {
					return err
				}
			}
		}
		return meta.Put(keySchema, u64(schemaVersion))
	case binary.BigEndian.Uint64(v) != 1:
		return fmt.Errorf("state file has schema %d, this broker understands up to %d", binary.BigEndian.Uint64(v), schemaVersion)
	}
	for _, b := range tables {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return err
		}
	}
	d, err := computeDigests(tx)
	if err != nil {
		return err
	}
	if err := putDigests(tx, &d); err != nil {
		return err
	}
	return meta.Put(keySchema, u64(schemaVersion))
}

// Close closes the state file.
func (f *FSM) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.db.Close()
}

// Path is the state file's path.
func (f *FSM) Path() string { return f.path }

// AppliedIndex is the index of the last Raft entry whose command reached the
// state file.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Changed returns a channel closed at the next change of the applied index.
func (f *FSM) Changed() <-chan struct{} { return *f.changed.Load() }

func (f *FSM) signal() {
	ch := make(chan struct{})
	if old := f.changed.Swap(&ch); old != nil {
		close(*old)
	}
}

// Failed returns the error that stopped the state machine, or nil.
func (f *FSM) Failed() error {
	if p := f.failed.Load(); p != nil {
		return p.err
	}
	return nil
}

// OnFailure registers fn to be called, in its own goroutine, whenever the
// state machine fails.
func (f *FSM) OnFailure(fn func(error)) { f.onFailure.Store(&fn) }

// fail stops the state machine: nothing more is applied, snapshots are
// refused, until Restore or Replace installs a whole state again.
func (f *FSM) fail(err error) {
	err = fmt.Errorf("%w: %w", ErrFailed, err)
	if !f.failed.CompareAndSwap(nil, &failure{err}) {
		return
	}
	f.log.Error("state machine stopped: this broker serves nothing until its state is rebuilt; "+
		"it reinstalls the leader's state when it can, or restart it to rebuild from its snapshot and log",
		"file", f.path, "applied_index", f.applied.Load(), "error", err)
	f.signal()
	if fn := f.onFailure.Load(); fn != nil {
		go (*fn)(err)
	}
}

// MarkDamaged stops the state machine because its state was found to
// differ from what it should be (the leader's digests at the same index).
func (f *FSM) MarkDamaged(err error) { f.fail(fmt.Errorf("%w: %w", ErrDamaged, err)) }

// MarkApplied records that the state holds every entry up to index, when
// the caller knows it (a Raft snapshot restored without an index in its
// frame) and the state says less.
func (f *FSM) MarkApplied(index uint64) error {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	f.mu.RLock()
	defer f.mu.RUnlock()
	if index <= f.applied.Load() {
		return nil
	}
	err := f.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyAppliedIndex, u64(index)) })
	if err == nil {
		err = f.db.Sync()
	}
	if err != nil {
		return fmt.Errorf("record applied index %d: %w", index, err)
	}
	d := f.Digests()
	d.Index = index
	f.digests.Store(&d)
	f.applied.Store(index)
	f.signal()
	return nil
}

// Digests returns the table digests as of the applied index.
func (f *FSM) Digests() Digests { return *f.digests.Load() }

// DigestsAt returns the table digests as they were right after the entry at
// index was applied, if that entry is recent enough to be remembered.
func (f *FSM) DigestsAt(index uint64) (Digests, bool) {
	if d := f.Digests(); d.Index == index {
		return d, true
	}
	return f.history.at(index)
}

// Verify reads every entry of the state file and compares it with the
// digests recorded with the data. A mismatch, or a page that cannot be read,
// wraps ErrDamaged; the state machine then fails.
func (f *FSM) Verify() (Digests, error) {
	var d Digests
	err := f.view(func(tx *bolt.Tx) error {
		var err error
		d, err = verifyTx(tx)
		return err
	})
	if err != nil {
		err = fmt.Errorf("verify state %s: %w", f.path, err)
		if errors.Is(err, ErrDamaged) {
			f.fail(err)
		}
	}
	return d, err
}

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// storageError marks a failure to read or write the state file, as opposed
// to a command the state refuses.
type storageError struct{ err error }

func (e *storageError) Error() string { return e.err.Error() }
func (e *storageError) Unwrap() error { return e.err }

// ApplyBatch implements raft.BatchingFSM: every command of the batch is
// applied in one bbolt transaction, together with the new applied index and
// table digests. Entries at or below the stored applied index were applied
// before a restart and are skipped. A storage failure stops the state
// machine (Failed): a broker that cannot write its state must stop serving
// rather than diverge from its peers; the entries of the batch answer
// ErrFailed.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	f.mu.RLock()
	defer f.mu.RUnlock()
	if err := f.Failed(); err != nil {
		return failedResults(logs, out, err)
	}
	applied := f.applied.Load()
	last := applied
	directory, linkKeys := false, false
	var hist []Digests
	var final Digests
	err := guard(f.path, func() error {
		return f.db.Update(func(tx *bolt.Tx) error {
			t, err := f.begin(tx)
			if err != nil {
				return err
			}
			for i, l := range logs {
				if l.Index <= applied {
					continue
				}
				if l.Type == raft.LogCommand {
					r, err := f.applyEntry(t, l)
					if err != nil {
						return err
					}
					out[i] = r
					directory = directory || r.directory
					linkKeys = linkKeys || r.linkKeys
				}
				last = l.Index
				t.d.Index = last
				hist = append(hist, t.d)
			}
			if last == applied {
				return nil
			}
			final = t.d
			if err := putDigests(tx, &t.d); err != nil {
				return err
			}
			return tx.Bucket(bucketMeta).Put(keyAppliedIndex, u64(last))
		})
	})
	if err != nil {
		f.fail(fmt.Errorf("apply entries %d-%d: %w", logs[0].Index, logs[len(logs)-1].Index, err))
		return failedResults(logs, out, f.Failed())
	}
	if last == applied {
		return out
	}
	f.history.add(hist)
	f.digests.Store(&final)
	f.applied.Store(last)
	if directory {
		f.dirVersion.Add(1)
	}
	if linkKeys {
		f.linkKeysVersion.Add(1)
	}
	f.signal()
	return out
}

func failedResults(logs []*raft.Log, out []any, err error) []any {
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			out[i] = &Result{Index: l.Index, Err: err}
		}
	}
	return out
}

func (f *FSM) applyEntry(t *txn, l *raft.Log) (*Result, error) {
	var cmd qhinv1.Command
	if err := proto.Unmarshal(l.Data, &cmd); err != nil {
		f.log.Error("refused raft entry", "index", l.Index, "error", err)
		return &Result{Index: l.Index, Err: fmt.Errorf("%w: entry %d is not a command", ErrInvalid, l.Index)}, nil
	}
	r, err := f.applyCommand(t, &cmd)
	if err != nil {
		return nil, err
	}
	r.Index = l.Index
	if errors.Is(r.Err, ErrUnknownCommand) {
		f.log.Error("refused raft entry", "index", l.Index, "error", r.Err)
	}
	return r, nil
}

// applyCommand applies one command, or replays the stored result of an
// earlier command with the same request id. The error is a storage failure;
// a refused command is a Result with Err.
func (f *FSM) applyCommand(t *txn, cmd *qhinv1.Command) (*Result, error) {
	h, payload, err := decode(cmd, f.opts.MaxCommandVersion)
	if err != nil {
		return &Result{Err: err}, nil
	}
	if cmd.RequestId != "" {
		if stored := t.get(bucketRequests, []byte(cmd.RequestId)); stored != nil {
			return replay(cmd, h, stored), nil
		}
	}
	outer, outerItems := t.restricts, t.items
	t.restricts, t.items = false, nil
	value, err := h.apply(t, cmd, payload)
	items := t.items
	t.items = outerItems
	var se *storageError
	if errors.As(err, &se) {
		return nil, se.err
	}
	if err != nil {
		err = fmt.Errorf("%v: %w", cmd.Type, err)
	}
	restricts := t.restricts && err == nil
	t.restricts = outer || restricts
	if cmd.RequestId != "" {
		if perr := rememberRequest(t, cmd, value, err, restricts); perr != nil {
			return nil, fmt.Errorf("remember request: %w", perr)
		}
	}
	if err != nil {
		items = nil
	}
	return &Result{Value: value, Err: err, directory: h.directory && err == nil, linkKeys: h.linkKeys && err == nil, Restricts: restricts, Items: items}, nil
}

func replay(cmd *qhinv1.Command, h handler, stored []byte) *Result {
	var cr qhinv1.CommandResult
	if err := proto.Unmarshal(stored, &cr); err != nil {
		return &Result{Err: fmt.Errorf("%w: stored result of request %s", ErrInvalid, cmd.RequestId)}
	}
	return resultFromStored(h, &cr)
}

func resultFromStored(h handler, cr *qhinv1.CommandResult) *Result {
	r := resultValue(h, cr)
	r.Restricts = cr.Restricts
	return r
}

func resultValue(h handler, cr *qhinv1.CommandResult) *Result {
	if cr.ErrorCode != "" {
		sentinel := sentinelOf(cr.ErrorCode)
		return &Result{Err: &commandError{sentinel: sentinel, msg: "refused: " + sentinel.Error()}}
	}
	if h.newResult == nil {
		return &Result{}
	}
	v := h.newResult()
	if err := proto.Unmarshal(cr.Result, v); err != nil {
		return &Result{Err: fmt.Errorf("%w: stored result", ErrInvalid)}
	}
	return &Result{Value: v}
}

// storedResult is what the replicated state keeps of a command's outcome:
// its result value, or the code of its error — never the error's text, which
// may differ between broker versions.
func storedResult(value proto.Message, err error, restricts bool) (*qhinv1.CommandResult, error) {
	cr := &qhinv1.CommandResult{Restricts: restricts}
	if err != nil {
		cr.ErrorCode = errorCode(err)
		return cr, nil
	}
	if value != nil {
		b, merr := proto.MarshalOptions{Deterministic: true}.Marshal(value)
		if merr != nil {
			return nil, merr
		}
		cr.Result = b
	}
	return cr, nil
}

// rememberRequest stores a command's result under its request id and forgets
// ids older than RequestRetention, measured in command time.
func rememberRequest(t *txn, cmd *qhinv1.Command, value proto.Message, cmdErr error, restricts bool) error {
	cr, err := storedResult(value, cmdErr, restricts)
	if err != nil {
		return err
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(cr)
	if err != nil {
		return err
	}
	now := cmd.GetTime().AsTime().UnixNano()
	// applyCommand looked the request id up: it is new.
	if err := t.insert(bucketRequests, []byte(cmd.RequestId), b); err != nil {
		return err
	}
	if err := t.put(bucketRequestTimes, append(u64(uint64(now)), cmd.RequestId...), nil); err != nil {
		return err
	}
	horizon := u64(uint64(now - int64(RequestRetention)))
	var expired [][]byte
	c := t.tx.Bucket(bucketRequestTimes).Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], horizon) < 0; k, _ = c.Next() {
		expired = append(expired, bytes.Clone(k))
	}
	for _, k := range expired {
		if err := t.del(bucketRequests, k[8:]); err != nil {
			return err
		}
		if err := t.del(bucketRequestTimes, k); err != nil {
			return err
		}
	}
	return nil
}

// view runs fn in a read transaction of the current file. A page that
// cannot be read fails the state machine instead of the process.
func (f *FSM) view(fn func(tx *bolt.Tx) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	err := guard(f.path, func() error { return f.db.View(fn) })
	if errors.Is(err, ErrDamaged) {
		f.fail(err)
	}
	return err
}

// Snapshot implements raft.FSM. It opens a read transaction, which sees the
// state as of the last applied entry for as long as it stays open. A failed
// state machine refuses: its file may be behind the index Raft would label
// the snapshot with.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if err := f.Failed(); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &snapshot{tx: tx}, nil
}

type snapshot struct {
	tx *bolt.Tx
}

// IndexedSink is a snapshot sink that knows the Raft index of the snapshot
// it receives (broker/cluster's snapshot store gives such sinks).
type IndexedSink interface {
	raft.SnapshotSink
	Index() uint64
}

// Persist streams the bbolt file as the read transaction sees it, framed
// with the snapshot's Raft index when the sink knows it.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	var index uint64
	if is, ok := sink.(IndexedSink); ok {
		index = is.Index()
	}
	if _, err := writeSnapshot(s.tx, sink, index); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

// Release ends the read transaction.
func (s *snapshot) Release() { _ = s.tx.Rollback() }

// WriteTo writes a snapshot of the current state to w, in the form Restore
// reads.
func (f *FSM) WriteTo(w io.Writer) (int64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if err := f.Failed(); err != nil {
		return 0, err
	}
	var n int64
	err := f.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = writeSnapshot(tx, w, 0)
		return err
	})
	return n, err
}

// Restore implements raft.FSM. The snapshot is written beside the live file
// and checked there (frame, layout, every table against its digests); only
// then does it replace the live file. A snapshot that is not a whole state
// file of this layout leaves the current state untouched.
//
// The restored state's applied index becomes the Raft index the snapshot
// was taken at, when its frame carries one (a Raft snapshot: the state
// holds every entry up to it); else 0 — an index carried over from another
// cluster (a backup restored into a new one) must not make that cluster's
// entries look applied.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	if _, err := f.install(rc, false); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// Replace installs a whole state fetched from the leader, keeping the
// applied index it carries, to recover from a failure or damage. No entry is
// applied while fetch runs, so the state fetched (as of a linearizable read
// on the leader) is at or past the local applied index; entries Raft
// delivers afterwards up to the new index are skipped as applied.
func (f *FSM) Replace(fetch func(w io.Writer) error) (uint64, error) {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(fetch(pw)) }()
	defer pr.Close()
	return f.install(pr, true)
}

// install receives a snapshot into a side file, checks it and swaps it in.
// The caller holds applyMu.
func (f *FSM) install(r io.Reader, keepIndex bool) (uint64, error) {
	tmpPath, db, d, raftIndex, err := receive(r, filepath.Dir(f.path), filepath.Base(f.path), f.boltOptions())
	if err != nil {
		return 0, err
	}
	if keepIndex && d.Index < f.applied.Load() && f.Failed() == nil {
		db.Close()
		os.Remove(tmpPath)
		return 0, fmt.Errorf("the state offered is at index %d, behind this broker's %d", d.Index, f.applied.Load())
	}
	if !keepIndex {
		err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyAppliedIndex, u64(raftIndex)) })
		if err != nil {
			db.Close()
			os.Remove(tmpPath)
			return 0, err
		}
		d.Index = raftIndex
	}
	// The swapped-in file must be durable with its index before it stands
	// for the state: an index from elsewhere must never survive a crash.
	if err := db.Sync(); err != nil {
		db.Close()
		os.Remove(tmpPath)
		return 0, fmt.Errorf("sync the received state: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := os.Rename(tmpPath, f.path); err != nil {
		db.Close()
		os.Remove(tmpPath)
		return 0, fmt.Errorf("swap state file: %w", err)
	}
	if err := syncDir(filepath.Dir(f.path)); err != nil {
		f.log.Warn("sync the state directory after the swap", "error", err)
	}
	old := f.db
	f.db = db
	f.applied.Store(d.Index)
	f.digests.Store(&d)
	f.history.reset()
	f.dirVersion.Add(1)
	f.linkKeysVersion.Add(1)
	if f.failed.Swap(nil) != nil {
		f.log.Info("state machine recovered: a whole state was installed", "file", f.path, "applied_index", d.Index)
	}
	f.signal()
	if err := old.Close(); err != nil {
		f.log.Warn("close replaced state file", "error", err)
	}
	return d.Index, nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// SnapshotInfo describes a saved snapshot.
type SnapshotInfo struct {
	// Index is the applied index recorded in the snapshot.
	Index uint64
	// Participants counts the directory entries.
	Participants int
	// TrustDomains are those of the participants' SPIFFE IDs, sorted.
	TrustDomains []string
}

// CheckSnapshot reads a snapshot as Restore would, in a scratch file in dir,
// and describes it when Restore would accept it.
func CheckSnapshot(r io.Reader, dir string) (SnapshotInfo, error) {
	tmpPath, db, d, _, err := receive(r, dir, "check", &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer os.Remove(tmpPath)
	defer db.Close()
	info := SnapshotInfo{Index: d.Index}
	err = guard(tmpPath, func() error {
		return db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketParticipants).ForEach(func(k, v []byte) error {
				p, err := decodeParticipant(string(k), v)
				if err != nil {
					return err
				}
				info.Participants++
				if td := trustDomainOf(p.SpiffeId); td != "" && !slices.Contains(info.TrustDomains, td) {
					info.TrustDomains = append(info.TrustDomains, td)
				}
				return nil
			})
		})
	})
	slices.Sort(info.TrustDomains)
	return info, err
}

// trustDomainOf returns the trust domain of a spiffe://td/... ID.
func trustDomainOf(id string) string {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return ""
	}
	td, _, _ := strings.Cut(rest, "/")
	return td
}

// receive writes a snapshot into a new file in dir and opens it once its
// frame, layout and every table's digest check out; the caller owns both.
// It also returns the Raft index in the frame.
func receive(r io.Reader, dir, name string, opts *bolt.Options) (string, *bolt.DB, Digests, uint64, error) {
	tmp, err := os.CreateTemp(dir, name+".restore-*")
	if err != nil {
		return "", nil, Digests{}, 0, err
	}
	tmpPath := tmp.Name()
	fail := func(err error) (string, *bolt.DB, Digests, uint64, error) {
		tmp.Close()
		os.Remove(tmpPath)
		return "", nil, Digests{}, 0, err
	}
	index, err := readSnapshot(r, tmp)
	if err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	db, d, err := checkRestored(tmpPath, opts)
	if err != nil {
		os.Remove(tmpPath)
		return "", nil, Digests{}, 0, fmt.Errorf("snapshot is not a whole broker state file: %w", err)
	}
	return tmpPath, db, d, index, nil
}

// checkRestored opens a received snapshot, brings its layout up to date and
// verifies every table against its digests.
func checkRestored(path string, opts *bolt.Options) (*bolt.DB, Digests, error) {
	db, err := OpenBolt(path, opts)
	if err != nil {
		return nil, Digests{}, err
	}
	var d Digests
	err = guard(path, func() error {
		err := db.Update(func(tx *bolt.Tx) error {
			// Tables newer than the file's schema are created by migrate.
			for _, b := range tablesV1 {
				if tx.Bucket(b) == nil {
					return fmt.Errorf("table %s missing", b)
				}
			}
			if v := tx.Bucket(bucketMeta).Get(keySchema); len(v) != 8 {
				return fmt.Errorf("schema %x", v)
			}
			if err := migrate(tx); err != nil {
				return err
			}
			for _, b := range tables {
				if tx.Bucket(b) == nil {
					return fmt.Errorf("table %s missing", b)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		return db.View(func(tx *bolt.Tx) error {
			d, err = verifyTx(tx)
			return err
		})
	})
	if err != nil {
		db.Close()
		return nil, Digests{}, err
	}
	return db, d, nil
}

// Checksums returns each data table's digest (entries:sha256), to compare
// the state of two brokers. It reads them from the last applied entry; Verify
// checks them against the file.
func (f *FSM) Checksums() (map[string]string, error) {
	if err := f.Failed(); err != nil {
		return nil, err
	}
	return f.Digests().Map(), nil
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
