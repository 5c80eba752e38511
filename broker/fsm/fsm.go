package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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

	tables = [][]byte{bucketMeta, bucketParticipants, bucketBrokers, bucketRequests, bucketRequestTimes}

	keyAppliedIndex = []byte("applied_index")
	keySchema       = []byte("schema")
)

// schemaVersion is the layout of the bbolt file. Restore refuses files of
// another layout.
const schemaVersion = 1

// RequestRetention is how long an idempotency key is remembered, measured in
// command time.
const RequestRetention = 24 * time.Hour

// FSM is the broker's state machine over one bbolt file. It implements
// raft.BatchingFSM; reads may run concurrently with Apply.
type FSM struct {
	path string
	log  *slog.Logger

	// mu guards db against the swap in Restore; Apply, reads and Snapshot
	// hold it shared.
	mu sync.RWMutex
	db *bolt.DB

	applied    atomic.Uint64
	dirVersion atomic.Uint64
}

var _ raft.BatchingFSM = (*FSM)(nil)

func openDB(path string) (*bolt.DB, error) {
	return bolt.Open(path, 0o600, &bolt.Options{
		Timeout: 5 * time.Second,
		// Snapshot holds a read transaction while it streams; a large initial
		// map keeps writers from waiting on it to grow the file.
		InitialMmapSize: 1 << 30,
	})
}

// Open opens or creates the state file at path.
func Open(path string, log *slog.Logger) (*FSM, error) {
	if log == nil {
		log = slog.Default()
	}
	db, err := openDB(path)
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	if err := initDB(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	f := &FSM{path: path, log: log, db: db}
	idx, err := readApplied(db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	f.applied.Store(idx)
	return f, nil
}

func initDB(db *bolt.DB) error {
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range tables {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v == nil {
			return meta.Put(keySchema, u64(schemaVersion))
		} else if len(v) != 8 || binary.BigEndian.Uint64(v) != schemaVersion {
			return fmt.Errorf("state file has schema %x, this broker understands %d", v, schemaVersion)
		}
		return nil
	})
}

func readApplied(db *bolt.DB) (uint64, error) {
	var idx uint64
	err := db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return errors.New("no meta table")
		}
		if v := meta.Get(keyAppliedIndex); len(v) == 8 {
			idx = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return idx, err
}

// Close closes the state file.
func (f *FSM) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.db.Close()
}

// AppliedIndex is the index of the last Raft entry whose command reached the
// state file.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch implements raft.BatchingFSM: every command of the batch is
// applied in one bbolt transaction, together with the new applied index.
// Entries at or below the stored applied index were applied before a restart
// and are skipped. A storage failure panics: a broker that cannot write its
// state must stop rather than diverge from its peers.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	f.mu.RLock()
	defer f.mu.RUnlock()
	applied := f.applied.Load()
	last := applied
	directory := false
	err := f.db.Update(func(tx *bolt.Tx) error {
		for i, l := range logs {
			if l.Type != raft.LogCommand || l.Index <= applied {
				continue
			}
			r := f.applyEntry(tx, l)
			out[i] = r
			directory = directory || r.directory
			last = l.Index
		}
		if last == applied {
			return nil
		}
		return tx.Bucket(bucketMeta).Put(keyAppliedIndex, u64(last))
	})
	if err != nil {
		panic(fmt.Sprintf("fsm: apply entries up to %d: %v", logs[len(logs)-1].Index, err))
	}
	f.applied.Store(last)
	if directory {
		f.dirVersion.Add(1)
	}
	return out
}

func (f *FSM) applyEntry(tx *bolt.Tx, l *raft.Log) *Result {
	var cmd qhinv1.Command
	if err := proto.Unmarshal(l.Data, &cmd); err != nil {
		f.log.Error("refused raft entry", "index", l.Index, "error", err)
		return &Result{Index: l.Index, Err: fmt.Errorf("%w: entry %d is not a command: %v", ErrInvalid, l.Index, err)}
	}
	r := applyCommand(tx, &cmd)
	r.Index = l.Index
	if errors.Is(r.Err, ErrUnknownCommand) {
		f.log.Error("refused raft entry", "index", l.Index, "error", r.Err)
	}
	return r
}

// applyCommand applies one command, or replays the stored result of an
// earlier command with the same request id.
func applyCommand(tx *bolt.Tx, cmd *qhinv1.Command) *Result {
	h, payload, err := decode(cmd)
	if err != nil {
		return &Result{Err: err}
	}
	if cmd.RequestId != "" {
		if stored := tx.Bucket(bucketRequests).Get([]byte(cmd.RequestId)); stored != nil {
			return replay(h, stored)
		}
	}
	value, err := h.apply(tx, cmd, payload)
	if err != nil {
		err = fmt.Errorf("%v: %w", cmd.Type, err)
	}
	directory := h.directory && err == nil
	if cmd.RequestId != "" {
		if perr := rememberRequest(tx, cmd, value, err); perr != nil {
			panic(fmt.Sprintf("fsm: remember request: %v", perr))
		}
	}
	return &Result{Value: value, Err: err, directory: directory}
}

func replay(h handler, stored []byte) *Result {
	var cr qhinv1.CommandResult
	if err := proto.Unmarshal(stored, &cr); err != nil {
		return &Result{Err: fmt.Errorf("%w: stored result: %v", ErrInvalid, err)}
	}
	return resultFromStored(h, &cr)
}

func resultFromStored(h handler, cr *qhinv1.CommandResult) *Result {
	if cr.ErrorCode != "" {
		return &Result{Err: &commandError{sentinel: errorCodes[cr.ErrorCode], msg: cr.Error}}
	}
	if h.newResult == nil {
		return &Result{}
	}
	v := h.newResult()
	if err := proto.Unmarshal(cr.Result, v); err != nil {
		return &Result{Err: fmt.Errorf("%w: stored result: %v", ErrInvalid, err)}
	}
	return &Result{Value: v}
}

func storedResult(value proto.Message, err error) (*qhinv1.CommandResult, error) {
	cr := &qhinv1.CommandResult{}
	if err != nil {
		cr.ErrorCode = errorCode(err)
		cr.Error = err.Error()
		return cr, nil
	}
	if value != nil {
		b, merr := proto.Marshal(value)
		if merr != nil {
			return nil, merr
		}
		cr.Result = b
	}
	return cr, nil
}

// rememberRequest stores a command's result under its request id and forgets
// ids older than RequestRetention, measured in command time.
func rememberRequest(tx *bolt.Tx, cmd *qhinv1.Command, value proto.Message, cmdErr error) error {
	cr, err := storedResult(value, cmdErr)
	if err != nil {
		return err
	}
	b, err := proto.Marshal(cr)
	if err != nil {
		return err
	}
	reqs, times := tx.Bucket(bucketRequests), tx.Bucket(bucketRequestTimes)
	now := cmd.GetTime().AsTime().UnixNano()
	if err := reqs.Put([]byte(cmd.RequestId), b); err != nil {
		return err
	}
	if err := times.Put(append(u64(uint64(now)), cmd.RequestId...), nil); err != nil {
		return err
	}
	horizon := u64(uint64(now - int64(RequestRetention)))
	c := times.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k[:8], horizon) < 0; k, _ = c.First() {
		if err := reqs.Delete(k[8:]); err != nil {
			return err
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// view runs fn in a read transaction of the current file.
func (f *FSM) view(fn func(tx *bolt.Tx) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.db.View(fn)
}

// Snapshot implements raft.FSM. It opens a read transaction, which sees the
// state as of the last applied entry for as long as it stays open.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &snapshot{tx: tx}, nil
}

type snapshot struct {
	tx *bolt.Tx
}

// Persist streams the bbolt file as the read transaction sees it.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := writeSnapshot(s.tx, sink); err != nil {
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
	var n int64
	err := f.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = writeSnapshot(tx, w)
		return err
	})
	return n, err
}

// Restore implements raft.FSM. The snapshot is written beside the live file
// and checked there; only then does it replace the live file. A snapshot that
// is not a state file of this layout leaves the current state untouched.
//
// The restored file's applied index is reset: Raft delivers only entries
// after the snapshot from now on, and an index carried over from another
// cluster (a backup restored into a new one) must not make them look applied.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmpPath, db, err := receive(rc, filepath.Dir(f.path), filepath.Base(f.path))
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := os.Rename(tmpPath, f.path); err != nil {
		db.Close()
		os.Remove(tmpPath)
		return fmt.Errorf("restore: swap state file: %w", err)
	}
	old := f.db
	f.db = db
	f.applied.Store(0)
	f.dirVersion.Add(1)
	if err := old.Close(); err != nil {
		f.log.Warn("close replaced state file", "error", err)
	}
	return nil
}

// CheckSnapshot reads a snapshot as Restore would, in a scratch file in dir,
// and reports whether Restore would accept it.
func CheckSnapshot(r io.Reader, dir string) error {
	tmpPath, db, err := receive(r, dir, "check")
	if err != nil {
		return err
	}
	db.Close()
	return os.Remove(tmpPath)
}

// receive writes a snapshot into a new file in dir and opens it once its
// frame, layout and tables check out; the caller owns both.
func receive(r io.Reader, dir, name string) (string, *bolt.DB, error) {
	tmp, err := os.CreateTemp(dir, name+".restore-*")
	if err != nil {
		return "", nil, err
	}
	tmpPath := tmp.Name()
	fail := func(err error) (string, *bolt.DB, error) {
		tmp.Close()
		os.Remove(tmpPath)
		return "", nil, err
	}
	if err := readSnapshot(r, tmp); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	db, err := checkRestored(tmpPath)
	if err != nil {
		os.Remove(tmpPath)
		return "", nil, fmt.Errorf("snapshot is not a broker state file: %w", err)
	}
	return tmpPath, db, nil
}

// checkRestored opens a received snapshot, verifies its layout and resets
// its applied index.
func checkRestored(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, InitialMmapSize: 1 << 30})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range tables {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("table %s missing", b)
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); len(v) != 8 || binary.BigEndian.Uint64(v) != schemaVersion {
			return fmt.Errorf("schema %x, want %d", v, schemaVersion)
		}
		return meta.Put(keyAppliedIndex, u64(0))
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Checksums returns a SHA-256 over every key and value of each table except
// the meta table, to compare the state of two brokers.
func (f *FSM) Checksums() (map[string]string, error) {
	sums := map[string]string{}
	err := f.view(func(tx *bolt.Tx) error {
		for _, name := range tables {
			if bytes.Equal(name, bucketMeta) {
				continue
			}
			h := sha256.New()
			n := 0
			err := tx.Bucket(name).ForEach(func(k, v []byte) error {
				h.Write(u64(uint64(len(k))))
				h.Write(k)
				h.Write(u64(uint64(len(v))))
				h.Write(v)
				n++
				return nil
			})
			if err != nil {
				return err
			}
			sums[string(name)] = fmt.Sprintf("%d:%s", n, hex.EncodeToString(h.Sum(nil)))
		}
		return nil
	})
	return sums, err
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
