package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// The record locator maps privacy-preserving tokens to the members that
// hold a patient with them. Three tables:
//
//	locator         key number (2 bytes) | token (16 bytes) | participant id  →  0x01
//	locator_keys    key id                                                    →  qhinv1.LinkageKey
//	locator_counts  participant id                                            →  tokens held (uint64)
//
// One entry per (token, member): the members of a token are the entries
// under its 18-byte prefix, found with one cursor seek; adding or removing
// a member never rewrites another's. Keys are numbered when added, so that
// an entry carries 2 bytes of key instead of its 16-character id.

// TokenSize is the length of a record-locator token: HMAC-SHA256 under the
// network's linkage key, truncated to 128 bits.
const TokenSize = 16

// MaxLocatorTokens caps the tokens of one publish or withdraw command, and
// of one PublishTokens or WithdrawTokens call.
const MaxLocatorTokens = 10_000

// KeyIDLen is the length of a linkage key id: 16 lowercase hex digits.
const KeyIDLen = 16

const entryPrefixLen = 2 + TokenSize

var presentValue = []byte{1}

func init() {
	update := func() proto.Message { return new(qhinv1.LocatorUpdate) }
	updateResult := func() proto.Message { return new(qhinv1.LocatorUpdateResult) }
	registerCommand(qhinv1.CommandType_COMMAND_TYPE_LOCATOR_PUBLISH, handler{
		newPayload: update, newResult: updateResult, apply: applyLocatorPublish, since: 2,
	})
	registerCommand(qhinv1.CommandType_COMMAND_TYPE_LOCATOR_WITHDRAW, handler{
		newPayload: update, newResult: updateResult, apply: applyLocatorWithdraw, since: 2,
	})
	key := func() proto.Message { return new(qhinv1.LinkageKey) }
	registerCommand(qhinv1.CommandType_COMMAND_TYPE_LOCATOR_SET_KEY, handler{
		newPayload: key, newResult: key, apply: applySetLinkageKey, since: 2,
	})
}

// ValidKeyID reports whether s has the form of a linkage key id: 16
// lowercase hex digits.
func ValidKeyID(s string) bool {
	if len(s) != KeyIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func getLinkageKey(get func(table, k []byte) []byte, id string) (*qhinv1.LinkageKey, error) {
	v := get(bucketLocatorKeys, []byte(id))
	if v == nil {
		return nil, fmt.Errorf("linkage key: %w", ErrNotFound)
	}
	k := new(qhinv1.LinkageKey)
	if err := proto.Unmarshal(v, k); err != nil {
		return nil, &storageError{fmt.Errorf("linkage key: %w", err)}
	}
	return k, nil
}

func applySetLinkageKey(t *txn, cmd *qhinv1.Command, payload proto.Message) (proto.Message, error) {
	in := payload.(*qhinv1.LinkageKey)
	if !ValidKeyID(in.KeyId) {
		return nil, fmt.Errorf("%w: key id must be %d lowercase hex digits", ErrInvalid, KeyIDLen)
	}
	switch in.State {
	case qhinv1.LinkageKeyState_LINKAGE_KEY_STATE_ACTIVE, qhinv1.LinkageKeyState_LINKAGE_KEY_STATE_RETIRED:
	default:
		return nil, fmt.Errorf("%w: key state must be active or retired", ErrInvalid)
	}
	k, err := getLinkageKey(t.get, in.KeyId)
	switch {
	case err == nil:
		k.State = in.State
		k.UpdatedAt = cmd.Time
	case isStorage(err):
		return nil, err
	default:
		// Keys are never deleted, so the table's entry count numbers
		// them: every broker assigns the same number.
		n := t.d.Tables[tableIndex(bucketLocatorKeys)].Count + 1
		if n > math.MaxUint16 {
			return nil, fmt.Errorf("%w: the network has used all %d linkage key numbers", ErrConflict, math.MaxUint16)
		}
		k = &qhinv1.LinkageKey{KeyId: in.KeyId, State: in.State, Number: uint32(n), CreatedAt: cmd.Time, UpdatedAt: cmd.Time}
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(k)
	if err != nil {
		return nil, err
	}
	return k, t.put(bucketLocatorKeys, []byte(k.KeyId), b)
}

func isStorage(err error) bool {
	_, ok := err.(*storageError)
	return ok
}

// checkUpdate checks a publish or withdraw before anything is written: the
// key, the member, the tokens. It returns the key's number.
func checkUpdate(t *txn, u *qhinv1.LocatorUpdate, publish bool) (uint16, error) {
	if len(u.Tokens) == 0 || len(u.Tokens) > MaxLocatorTokens {
		return 0, fmt.Errorf("%w: 1 to %d tokens per command", ErrInvalid, MaxLocatorTokens)
	}
	for i, tok := range u.Tokens {
		if len(tok) != TokenSize {
			return 0, fmt.Errorf("%w: token %d is not %d bytes", ErrInvalid, i, TokenSize)
		}
	}
	if !ValidKeyID(u.KeyId) {
		return 0, fmt.Errorf("%w: key id must be %d lowercase hex digits", ErrInvalid, KeyIDLen)
	}
	k, err := getLinkageKey(t.get, u.KeyId)
	if err != nil {
		if isStorage(err) {
			return 0, err
		}
		return 0, fmt.Errorf("%w: not a linkage key of the network", ErrInvalid)
	}
	if publish && k.State != qhinv1.LinkageKeyState_LINKAGE_KEY_STATE_ACTIVE {
		return 0, fmt.Errorf("%w: the linkage key is retired: publish under the active key", ErrConflict)
	}
	p, err := decodeParticipant(u.ParticipantId, t.get(bucketParticipants, []byte(u.ParticipantId)))
	if err != nil {
		return 0, err
	}
	if publish && p.Status == qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED {
		return 0, fmt.Errorf("participant %s is retired: %w", p.Id, ErrConflict)
	}
	return uint16(k.Number), nil
}

// entryKey is a locator entry's key: key number, token, participant id.
func entryKey(dst []byte, num uint16, token []byte, participant string) []byte {
	dst = binary.BigEndian.AppendUint16(dst[:0], num)
	dst = append(dst, token...)
	return append(dst, participant...)
}

func applyLocatorPublish(t *txn, _ *qhinv1.Command, payload proto.Message) (proto.Message, error) {
	u := payload.(*qhinv1.LocatorUpdate)
	num, err := checkUpdate(t, u, true)
	if err != nil {
		return nil, err
	}
	var added uint32
	k := make([]byte, 0, entryPrefixLen+len(u.ParticipantId))
	for _, tok := range sortedTokens(u.Tokens) {
		k = entryKey(k, num, tok, u.ParticipantId)
		if t.get(bucketLocator, k) != nil {
			continue
		}
		if err := t.insert(bucketLocator, bytes.Clone(k), presentValue); err != nil {
			return nil, &storageError{err}
		}
		added++
	}
	if err := addCount(t, u.ParticipantId, int64(added)); err != nil {
		return nil, err
	}
	return &qhinv1.LocatorUpdateResult{Changed: added}, nil
}

func applyLocatorWithdraw(t *txn, _ *qhinv1.Command, payload proto.Message) (proto.Message, error) {
	u := payload.(*qhinv1.LocatorUpdate)
	num, err := checkUpdate(t, u, false)
	if err != nil {
		return nil, err
	}
	var removed uint32
	k := make([]byte, 0, entryPrefixLen+len(u.ParticipantId))
	for _, tok := range sortedTokens(u.Tokens) {
		k = entryKey(k, num, tok, u.ParticipantId)
		if t.get(bucketLocator, k) == nil {
			continue
		}
		if err := t.del(bucketLocator, k); err != nil {
			return nil, &storageError{err}
		}
		removed++
	}
	if err := addCount(t, u.ParticipantId, -int64(removed)); err != nil {
		return nil, err
	}
	return &qhinv1.LocatorUpdateResult{Changed: removed}, nil
}

// sortedTokens returns the tokens in byte order: consecutive writes then
// fall on the same pages of the table, which keeps a large command's
// transaction small.
func sortedTokens(tokens [][]byte) [][]byte {
	s := slices.Clone(tokens)
	slices.SortFunc(s, bytes.Compare)
	return s
}

// addCount changes the count of tokens a member holds; a count of zero
// leaves no entry.
func addCount(t *txn, participant string, delta int64) error {
	if delta == 0 {
		return nil
	}
	var n uint64
	if v := t.get(bucketLocatorCounts, []byte(participant)); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	n = uint64(int64(n) + delta)
	var err error
	if n == 0 {
		err = t.del(bucketLocatorCounts, []byte(participant))
	} else {
		err = t.put(bucketLocatorCounts, []byte(participant), u64(n))
	}
	if err != nil {
		return &storageError{err}
	}
	return nil
}

// LinkageKey returns one linkage key, or an error wrapping ErrNotFound.
func (f *FSM) LinkageKey(id string) (*qhinv1.LinkageKey, error) {
	var k *qhinv1.LinkageKey
	err := f.view(func(tx *bolt.Tx) error {
		var err error
		k, err = getLinkageKey(func(table, key []byte) []byte { return tx.Bucket(table).Get(key) }, id)
		return err
	})
	return k, err
}

// LinkageKeys returns every linkage key the network has had, in id order.
func (f *FSM) LinkageKeys() ([]*qhinv1.LinkageKey, error) {
	var out []*qhinv1.LinkageKey
	err := f.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLocatorKeys).ForEach(func(_, v []byte) error {
			k := new(qhinv1.LinkageKey)
			if err := proto.Unmarshal(v, k); err != nil {
				return err
			}
			out = append(out, k)
			return nil
		})
	})
	return out, err
}

// LocatorCounts returns the tokens each member holds, in member id order.
func (f *FSM) LocatorCounts() ([]*qhinv1.MemberTokens, error) {
	var out []*qhinv1.MemberTokens
	err := f.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLocatorCounts).ForEach(func(k, v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("%w: token count of a member has %d bytes", ErrDamaged, len(v))
			}
			out = append(out, &qhinv1.MemberTokens{ParticipantId: string(k), Tokens: binary.BigEndian.Uint64(v)})
			return nil
		})
	})
	return out, err
}

// LocatorCount returns the tokens one member holds.
func (f *FSM) LocatorCount(participant string) (uint64, error) {
	var n uint64
	err := f.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketLocatorCounts).Get([]byte(participant)); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return n, err
}

// TokenSet is tokens under one linkage key, as a query carries them.
type TokenSet struct {
	KeyID  string
	Tokens [][]byte
}

// LocatorHolders returns the members that hold any of the tokens, in id
// order. A set whose key the network does not know is an error wrapping
// ErrNotFound that names its index; tokens must be TokenSize bytes (the
// caller checks).
func (f *FSM) LocatorHolders(sets []TokenSet) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	err := f.view(func(tx *bolt.Tx) error {
		get := func(table, key []byte) []byte { return tx.Bucket(table).Get(key) }
		c := tx.Bucket(bucketLocator).Cursor()
		var prefix [entryPrefixLen]byte
		for i, s := range sets {
			k, err := getLinkageKey(get, s.KeyID)
			if err != nil {
				if isStorage(err) {
					return err
				}
				return &UnknownKeyError{Set: i}
			}
			binary.BigEndian.PutUint16(prefix[:2], uint16(k.Number))
			for _, tok := range s.Tokens {
				copy(prefix[2:], tok)
				for e, _ := c.Seek(prefix[:]); e != nil && bytes.HasPrefix(e, prefix[:]); e, _ = c.Next() {
					if id := string(e[entryPrefixLen:]); !seen[id] {
						seen[id] = true
						out = append(out, id)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(out)
	return out, nil
}

// UnknownKeyError is a token set whose linkage key the network does not
// know.
type UnknownKeyError struct{ Set int }

func (e *UnknownKeyError) Error() string {
	return fmt.Sprintf("token set %d: not a linkage key of the network", e.Set)
}

// Unwrap makes an UnknownKeyError match ErrNotFound.
func (e *UnknownKeyError) Unwrap() error { return ErrNotFound }

// LocatorSize describes the locator table on disk: its entries (one per
// token and member), the bytes its pages use and the bytes of the pages it
// occupies.
type LocatorSize struct {
	Entries    int
	InUse      int64
	Allocated  int64
	Depth      int
	LeafPages  int
	FileBytes  int64
	OtherBytes int64 // pages of every other table
}

// LocatorSize reads the locator table's page statistics (bbolt's
// BucketStats).
func (f *FSM) LocatorSize() (LocatorSize, error) {
	var s LocatorSize
	err := f.view(func(tx *bolt.Tx) error {
		st := tx.Bucket(bucketLocator).Stats()
		s.Entries = st.KeyN
		s.InUse = int64(st.BranchInuse + st.LeafInuse)
		s.Allocated = int64(st.BranchAlloc + st.LeafAlloc)
		s.Depth, s.LeafPages = st.Depth, st.LeafPageN
		s.FileBytes = tx.Size()
		for _, b := range tables {
			if !bytes.Equal(b, bucketLocator) {
				o := tx.Bucket(b).Stats()
				s.OtherBytes += int64(o.BranchAlloc + o.LeafAlloc)
			}
		}
		return nil
	})
	return s, err
}
