// Package audit is every node's own audit ledger: an append-only,
// hash-chained record, in bbolt, of what the node disclosed, refused and
// changed, and for whom. Brokers and participants each keep one
// (DATA/audit.db); nothing of it is replicated.
//
// Each entry carries the hash of the one before it, and is stored as its
// SHA-256 followed by its encoding: editing any stored byte breaks the chain
// at that entry, which Verify names. A ledger cut short at its end is
// detected against its head (Verify returns the head hash; record it
// elsewhere).
//
// Appends are group-committed: one writer takes every entry waiting and
// writes them in one transaction, one fsync, so a query waits for its
// entry's durability without the ledger becoming the queries' bottleneck.
// Refusals are written without their caller waiting, and identical ones
// (same caller, method and reason) that arrive together become one entry
// with a count, so a flood of refused calls costs the ledger little.
//
// Entries hold ids, codes and fixed words only. A broker refers to patients
// by a reference to the links it issued (LinkRef), a participant by its
// local patient ids; neither writes a name, a birth date or anything else a
// caller typed.
package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

var (
	bucketEntries = []byte("entries")
	bucketMeta    = []byte("meta")
	keyHead       = []byte("head") // seq (8 bytes) and hash of the newest entry
)

// ErrUnavailable is the error of an append the ledger could not write (or
// a ledger that is closed): the caller must not disclose what it was about
// to record.
var ErrUnavailable = errors.New("the audit ledger cannot be written")

const (
	queueSize = 8192
	maxBatch  = 4096
	// refusalFlush is how long refusals nobody waits for may gather
	// before they are written: a member flooding refused calls costs the
	// ledger one transaction (one disk sync) per interval, not one per
	// call. A disclosure's entry, which its caller waits for, is written
	// at once and takes the gathered refusals with it.
	refusalFlush = 100 * time.Millisecond
)

// Ledger is one node's audit ledger.
type Ledger struct {
	db   *bolt.DB
	path string
	node string
	log  *slog.Logger

	reqs   chan *request
	stop   chan struct{}
	done   chan struct{}
	closed atomic.Bool
	once   sync.Once

	// Written by the writer goroutine only.
	seq        uint64
	head       []byte
	lastTime   time.Time
	lastCommit time.Time

	appended atomic.Uint64
	batches  atomic.Uint64
	dropped  atomic.Uint64
}

type request struct {
	e    *qhinv1.AuditEntry
	done chan error // nil: the caller does not wait
}

// Open opens (or creates) the ledger at path for node, the SPIFFE ID of its
// owner, and starts its writer.
func Open(path, node string, log *slog.Logger) (*Ledger, error) {
	if log == nil {
		log = slog.Default()
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("open audit ledger %s: %w", path, err)
	}
	l := &Ledger{db: db, path: path, node: node, log: log, reqs: make(chan *request, queueSize),
		stop: make(chan struct{}), done: make(chan struct{})}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketEntries); err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		// The head is where the next entry chains on: the newest entry as
		// stored, whatever the meta table says (Verify compares them).
		k, v := tx.Bucket(bucketEntries).Cursor().Last()
		switch {
		case k == nil:
		case len(k) != 8 || len(v) < sha256.Size:
			return fmt.Errorf("the newest entry is malformed")
		default:
			l.seq = binary.BigEndian.Uint64(k)
			l.head = bytes.Clone(v[:sha256.Size])
			var e qhinv1.AuditEntry
			if proto.Unmarshal(v[sha256.Size:], &e) == nil {
				l.lastTime = e.GetTime().AsTime()
			}
		}
		if meta.Get(keyHead) == nil && k != nil {
			return meta.Put(keyHead, headValue(l.seq, l.head))
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open audit ledger %s: %w", path, err)
	}
	go l.write()
	return l, nil
}

// Node is the SPIFFE ID of the ledger's owner.
func (l *Ledger) Node() string { return l.node }

// Path is the ledger file's path.
func (l *Ledger) Path() string { return l.path }

// Append records entries and returns once they are durable. It fails with
// ErrUnavailable when the ledger cannot write them: the caller must then
// not disclose what they describe.
func (l *Ledger) Append(ctx context.Context, entries ...*qhinv1.AuditEntry) error {
	if l == nil {
		return nil
	}
	if l.closed.Load() {
		return fmt.Errorf("%w: closed", ErrUnavailable)
	}
	reqs := make([]*request, len(entries))
	for i, e := range entries {
		reqs[i] = &request{e: e, done: make(chan error, 1)}
		select {
		case l.reqs <- reqs[i]:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		case <-l.stop:
			return fmt.Errorf("%w: closed", ErrUnavailable)
		}
	}
	for _, r := range reqs {
		select {
		case err := <-r.done:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			// The entry is queued and will be written; the caller gives
			// up waiting, and treats it as not written.
			return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
	}
	return nil
}

// Record queues e without waiting for it to be written: for refusals,
// which disclose nothing. When the queue is full the entry is dropped and
// counted (Stats).
func (l *Ledger) Record(e *qhinv1.AuditEntry) {
	if l == nil || l.closed.Load() {
		return
	}
	select {
	case l.reqs <- &request{e: e}:
	default:
		l.dropped.Add(1)
	}
}

// Stats are the ledger's counters.
type Stats struct {
	// Entries is the newest sequence number written.
	Entries uint64
	// Appended counts entries written since the ledger opened, Batches the
	// transactions they took, Dropped the refusals that found the queue
	// full.
	Appended, Batches, Dropped uint64
}

// Stats returns the ledger's counters.
func (l *Ledger) Stats() Stats {
	return Stats{Appended: l.appended.Load(), Batches: l.batches.Load(), Dropped: l.dropped.Load(), Entries: l.entries()}
}

func (l *Ledger) entries() uint64 {
	var n uint64
	l.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketEntries).Cursor().Last(); len(k) == 8 {
			n = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return n
}

// Close writes what is queued, stops the writer and closes the file.
func (l *Ledger) Close() error {
	if l == nil {
		return nil
	}
	var err error
	l.once.Do(func() {
		l.closed.Store(true)
		close(l.stop)
		<-l.done
		err = l.db.Close()
	})
	return err
}

// write is the ledger's one writer: it takes every request waiting, up to
// maxBatch, and writes them in one transaction.
func (l *Ledger) write() {
	defer close(l.done)
	batch := make([]*request, 0, 64)
	for {
		batch = batch[:0]
		select {
		case r := <-l.reqs:
			batch = append(batch, r)
		case <-l.stop:
			// Write what is still queued, then stop.
			for {
				select {
				case r := <-l.reqs:
					batch = append(batch, r)
					if len(batch) < maxBatch {
						continue
					}
				default:
				}
				if len(batch) == 0 {
					return
				}
				l.commit(batch)
				batch = batch[:0]
			}
		}
	more:
		for len(batch) < maxBatch {
			select {
			case r := <-l.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		if !waited(batch) {
			batch = l.gather(batch)
		}
		l.commit(batch)
	}
}

// waited reports whether a caller waits for an entry of batch.
func waited(batch []*request) bool {
	for _, r := range batch {
		if r.done != nil {
			return true
		}
	}
	return false
}

// gather adds to a batch nobody waits for what arrives until refusalFlush
// has passed since the last commit, a waited entry arrives, the batch is
// full or the ledger stops.
func (l *Ledger) gather(batch []*request) []*request {
	wait := time.Until(l.lastCommit.Add(refusalFlush))
	if wait <= 0 {
		return batch
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for len(batch) < maxBatch {
		select {
		case r := <-l.reqs:
			batch = append(batch, r)
			if r.done != nil {
				return batch
			}
		case <-t.C:
			return batch
		case <-l.stop:
			return batch
		}
	}
	return batch
}

// refusalKey identifies refusals that may share one entry.
type refusalKey struct{ actor, method, outcome, reason string }

// commit writes a batch in one transaction and tells each waiter.
func (l *Ledger) commit(batch []*request) {
	// Refusals nobody waits for, identical in caller, method and reason,
	// become one entry with a count.
	entries := make([]*qhinv1.AuditEntry, 0, len(batch))
	merged := map[refusalKey]*qhinv1.AuditEntry{}
	for _, r := range batch {
		e := r.e
		if r.done == nil && e.Action == ActionRefused {
			k := refusalKey{e.Actor, e.Method, e.Outcome, e.Reason}
			if m, ok := merged[k]; ok {
				m.Count = max(m.Count, 1) + max(e.Count, 1)
				continue
			}
			merged[k] = e
		}
		entries = append(entries, e)
	}
	l.lastCommit = time.Now()
	seq, head, last := l.seq, l.head, l.lastTime
	err := l.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEntries)
		for _, e := range entries {
			seq++
			now := time.Now()
			if now.Before(last) {
				now = last // times never go back, so a scan by time can stop early
			}
			last = now
			e.Seq, e.Time, e.PrevHash, e.Hash = seq, timestamppb.New(now), head, nil
			body, err := proto.MarshalOptions{Deterministic: true}.Marshal(e)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(body)
			if err := b.Put(binary.BigEndian.AppendUint64(nil, seq), append(sum[:], body...)); err != nil {
				return err
			}
			head = sum[:]
			e.Hash = head
		}
		return tx.Bucket(bucketMeta).Put(keyHead, headValue(seq, head))
	})
	if err != nil {
		l.log.Error("audit ledger write failed; queries that must be recorded are refused until it works again",
			"file", l.path, "entries", len(entries), "error", err)
		err = fmt.Errorf("%w: %v", ErrUnavailable, err)
	} else {
		l.seq, l.head, l.lastTime = seq, head, last
		l.appended.Add(uint64(len(entries)))
		l.batches.Add(1)
	}
	for _, r := range batch {
		if r.done != nil {
			r.done <- err
		}
	}
}

func headValue(seq uint64, hash []byte) []byte {
	return append(binary.BigEndian.AppendUint64(nil, seq), hash...)
}

// Filter selects entries of List.
type Filter struct {
	// Participant matches the initiator, the actor's participant id or a
	// member asked.
	Participant string
	Purpose     string
	Since       time.Time
	// Patient matches a patient reference: a link (turned into its
	// reference) or a reference or local id.
	Patient string
	Action  string
	// Limit caps the entries returned (default 100, at most MaxList).
	Limit int
	// Before lists entries with a lower sequence number only (0: from the
	// newest).
	Before uint64
}

// MaxList caps the entries one List returns; maxScan the entries it reads.
const (
	MaxList = 1000
	maxScan = 200_000
)

// List returns entries matching f, newest first, and the sequence number to
// continue below (0 when there are no more).
func (l *Ledger) List(f Filter) ([]*qhinv1.AuditEntry, uint64, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	f.Limit = min(f.Limit, MaxList)
	patient := PatientRef(f.Patient)
	var out []*qhinv1.AuditEntry
	var next uint64
	err := l.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEntries).Cursor()
		var k, v []byte
		if f.Before > 0 {
			k, v = c.Seek(binary.BigEndian.AppendUint64(nil, f.Before))
			if k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		} else {
			k, v = c.Last()
		}
		for scanned := 0; k != nil; k, v = c.Prev() {
			seq := binary.BigEndian.Uint64(k)
			if scanned++; scanned > maxScan || len(out) == f.Limit {
				next = seq + 1
				return nil
			}
			if len(v) < sha256.Size {
				continue
			}
			e := new(qhinv1.AuditEntry)
			if err := proto.Unmarshal(v[sha256.Size:], e); err != nil {
				continue // Verify reports it
			}
			if !f.Since.IsZero() && e.GetTime().AsTime().Before(f.Since) {
				return nil
			}
			if !matches(e, f, patient) {
				continue
			}
			e.Hash = bytes.Clone(v[:sha256.Size])
			out = append(out, e)
		}
		return nil
	})
	return out, next, err
}

func matches(e *qhinv1.AuditEntry, f Filter, patient string) bool {
	switch {
	case f.Purpose != "" && e.PurposeOfUse != f.Purpose:
		return false
	case f.Action != "" && e.Action != f.Action:
		return false
	case patient != "" && !contains(e.PatientRefs, patient) && !contains(e.RecordRefs, patient):
		return false
	}
	if p := f.Participant; p != "" {
		if e.InitiatorParticipantId == p || strings.HasSuffix(e.Actor, "/participant/"+p) {
			return true
		}
		for _, m := range e.Members {
			if m.ParticipantId == p {
				return true
			}
		}
		return false
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Verification is what Verify found.
type Verification struct {
	Entries uint64
	Head    []byte
	OK      bool
	// FirstBroken is the first entry that does not hold, and Problem why.
	FirstBroken uint64
	Problem     string
}

// Verify reads the whole ledger in order and checks that every entry's
// stored hash is the SHA-256 of its content, that it carries its own
// sequence number and the hash of the entry before it, and that the head
// recorded with the ledger is its newest entry.
func (l *Ledger) Verify() (Verification, error) {
	var out Verification
	err := l.db.View(func(tx *bolt.Tx) error {
		var prev []byte
		var want uint64 = 1
		broken := func(seq uint64, format string, args ...any) error {
			out.FirstBroken, out.Problem = seq, fmt.Sprintf(format, args...)
			return nil
		}
		c := tx.Bucket(bucketEntries).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 8 {
				return broken(want, "a key of %d bytes stands where entry %d should", len(k), want)
			}
			seq := binary.BigEndian.Uint64(k)
			if seq != want {
				return broken(want, "entry %d is missing (the next entry is %d)", want, seq)
			}
			if len(v) <= sha256.Size {
				return broken(seq, "entry %d is truncated", seq)
			}
			sum := sha256.Sum256(v[sha256.Size:])
			if !bytes.Equal(sum[:], v[:sha256.Size]) {
				return broken(seq, "entry %d does not match its hash: its content or its hash was changed", seq)
			}
			var e qhinv1.AuditEntry
			if err := proto.Unmarshal(v[sha256.Size:], &e); err != nil {
				return broken(seq, "entry %d does not decode", seq)
			}
			if e.Seq != seq {
				return broken(seq, "entry %d says it is entry %d", seq, e.Seq)
			}
			if !bytes.Equal(e.PrevHash, prev) {
				return broken(seq, "entry %d does not chain on entry %d: an entry was changed, removed or inserted", seq, seq-1)
			}
			prev = v[:sha256.Size]
			out.Entries = seq
			want++
		}
		out.Head = bytes.Clone(prev)
		if hv := tx.Bucket(bucketMeta).Get(keyHead); hv != nil {
			if len(hv) != 8+sha256.Size || binary.BigEndian.Uint64(hv) != out.Entries || !bytes.Equal(hv[8:], out.Head) {
				return broken(out.Entries+1, "the ledger's recorded head is not its newest entry %d: entries at the end were removed or replaced", out.Entries)
			}
		} else if out.Entries > 0 {
			return broken(out.Entries+1, "the ledger has lost its recorded head")
		}
		out.OK = true
		return nil
	})
	return out, err
}

// Actions the ledgers record.
const (
	ActionDiscover  = "discover"
	ActionDocuments = "documents"
	ActionRetrieve  = "retrieve"
	// ActionRetrieveFailed follows an ActionRetrieve entry whose stream
	// then failed.
	ActionRetrieveFailed = "retrieve-failed"
	ActionRefused        = "refused"
	// ActionInformationBlocking records a member that declined a purpose
	// it must answer.
	ActionInformationBlocking = "possible-information-blocking"
)

// LinkPrefix starts every link a broker issues.
const LinkPrefix = "q1."

// LinkRef is how a ledger refers to a link: a short digest, so that the
// ledger neither holds the capability itself nor grows with its length.
func LinkRef(link string) string {
	sum := sha256.Sum256([]byte(link))
	return "link:" + base64.RawURLEncoding.EncodeToString(sum[:12])
}

// PatientRef is the reference a patient filter stands for: a link's
// reference, or the value itself (a reference or a local id).
func PatientRef(s string) string {
	if strings.HasPrefix(s, LinkPrefix) {
		return LinkRef(s)
	}
	return s
}
