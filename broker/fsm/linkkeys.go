package fsm

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Link keys are the secrets every broker seals links with (broker/links.go).
// They are replicated so that a link one broker issued opens on every other,
// and rotated by a command the leader proposes: the proposer draws the
// secret, apply stores it under the next id with the command's time and
// forgets all but the newest few.

// LinkKeySize is the length of a link key's secret.
const LinkKeySize = 32

// MinLinkKeysKept is the fewest keys a rotation may keep: the new one, and
// the one whose links may still be live.
const MinLinkKeysKept = 2

func init() {
	registerCommand(qhinv1.CommandType_COMMAND_TYPE_ROTATE_LINK_KEY, handler{
		newPayload: func() proto.Message { return new(qhinv1.LinkKey) },
		newResult:  func() proto.Message { return new(qhinv1.LinkKey) },
		apply:      applyRotateLinkKey,
		linkKeys:   true,
		since:      2,
	})
}

func linkKeyID(id uint32) []byte { return binary.BigEndian.AppendUint32(nil, id) }

// applyRotateLinkKey adds a key under the next id and drops the keys past
// the newest k.Keep. Its result names the key without its secret (a result
// is remembered under the request id).
func applyRotateLinkKey(t *txn, cmd *qhinv1.Command, payload proto.Message) (proto.Message, error) {
	k := payload.(*qhinv1.LinkKey)
	if len(k.Secret) != LinkKeySize {
		return nil, fmt.Errorf("%w: a link key has %d bytes", ErrInvalid, LinkKeySize)
	}
	if k.Keep < MinLinkKeysKept {
		return nil, fmt.Errorf("%w: a rotation keeps at least %d keys", ErrInvalid, MinLinkKeysKept)
	}
	var newest uint32
	if last, _ := t.tx.Bucket(bucketLinkKeys).Cursor().Last(); len(last) == 4 {
		newest = binary.BigEndian.Uint32(last)
	}
	if k.Id != newest+1 {
		return nil, fmt.Errorf("link key %d: the newest key is %d: %w", k.Id, newest, ErrConflict)
	}
	k.Created = cmd.Time
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(k)
	if err != nil {
		return nil, err
	}
	if err := t.insert(bucketLinkKeys, linkKeyID(k.Id), b); err != nil {
		return nil, err
	}
	if k.Id > k.Keep {
		var old [][]byte
		c := t.tx.Bucket(bucketLinkKeys).Cursor()
		for key, _ := c.First(); key != nil && binary.BigEndian.Uint32(key) <= k.Id-k.Keep; key, _ = c.Next() {
			old = append(old, append([]byte(nil), key...))
		}
		for _, key := range old {
			if err := t.del(bucketLinkKeys, key); err != nil {
				return nil, err
			}
		}
	}
	return &qhinv1.LinkKey{Id: k.Id, Created: k.Created, Keep: k.Keep}, nil
}

// LinkKeys returns the link keys the state holds, newest first.
func (f *FSM) LinkKeys() ([]*qhinv1.LinkKey, error) {
	var out []*qhinv1.LinkKey
	err := f.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLinkKeys).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			key := new(qhinv1.LinkKey)
			if err := proto.Unmarshal(v, key); err != nil {
				return fmt.Errorf("link key %x: %w", k, err)
			}
			out = append(out, key)
		}
		return nil
	})
	return out, err
}

// LinkKeysVersion changes whenever the link keys may have changed; callers
// cache the keys and reload them when it moves.
func (f *FSM) LinkKeysVersion() uint64 { return f.linkKeysVersion.Load() }
