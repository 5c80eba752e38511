package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// The store keeps the record-locator tokens of its patients and what the
// brokers must still be told about them, in the same file as the records:
//
//	locator_patients  patient id          → key id, the patient's own tokens, alias tokens
//	locator_refs      key id | token      → how many patients have the token (uint32)
//	locator_publish   key id | token      → queued: the brokers must learn the member holds it
//	locator_withdraw  key id | token      → queued: the brokers must forget it
//
// A token is published when its first patient comes and withdrawn when its
// last one goes, so patients that share a token (twins with one phone)
// never withdraw it from under each other. The queues are an outbox: a
// write of patients and their tokens is durable once it returns, and the
// member's publisher drains the queues to the brokers, acknowledging each
// batch once the cluster has applied it, so a crash loses nothing.
var (
	bucketTokenPatients = []byte("locator_patients")
	bucketTokenRefs     = []byte("locator_refs")
	bucketTokenPublish  = []byte("locator_publish")
	bucketTokenWithdraw = []byte("locator_withdraw")

	tokenBuckets = [][]byte{bucketTokenPatients, bucketTokenRefs, bucketTokenPublish, bucketTokenWithdraw}
)

// TokenSize is the length of a record-locator token.
const TokenSize = 16

// Token is a record-locator token.
type Token = [TokenSize]byte

// KeyIDLen is the length of a linkage key id.
const KeyIDLen = 16

// PatientTokens are the tokens one patient's demographics give under a
// linkage key.
type PatientTokens struct {
	PatientID string
	KeyID     string
	Tokens    []Token
}

// tokenEntry is what the store records of a patient's tokens.
type tokenEntry struct {
	keyID   string
	own     []Token
	aliases []Token // oldest first
}

const tokenEntryVersion = 1

func (e *tokenEntry) encode() []byte {
	b := make([]byte, 0, 1+KeyIDLen+2+TokenSize*(len(e.own)+len(e.aliases)))
	b = append(b, tokenEntryVersion)
	b = append(b, e.keyID...)
	b = append(b, byte(len(e.own)))
	for _, t := range e.own {
		b = append(b, t[:]...)
	}
	b = append(b, byte(len(e.aliases)))
	for _, t := range e.aliases {
		b = append(b, t[:]...)
	}
	return b
}

func decodeTokenEntry(v []byte) (*tokenEntry, error) {
	bad := errors.New("malformed token entry")
	if len(v) < 1+KeyIDLen+2 || v[0] != tokenEntryVersion {
		return nil, bad
	}
	e := &tokenEntry{keyID: string(v[1 : 1+KeyIDLen])}
	rest := v[1+KeyIDLen:]
	read := func() ([]Token, bool) {
		if len(rest) < 1 {
			return nil, false
		}
		n := int(rest[0])
		rest = rest[1:]
		if len(rest) < n*TokenSize {
			return nil, false
		}
		out := make([]Token, n)
		for i := range out {
			copy(out[i][:], rest[i*TokenSize:])
		}
		rest = rest[n*TokenSize:]
		return out, true
	}
	var ok bool
	if e.own, ok = read(); !ok {
		return nil, bad
	}
	if e.aliases, ok = read(); !ok || len(rest) != 0 {
		return nil, bad
	}
	return e, nil
}

// all returns the entry's distinct tokens.
func (e *tokenEntry) all() []Token {
	if e == nil {
		return nil
	}
	out := append(slices.Clone(e.own), e.aliases...)
	slices.SortFunc(out, func(a, b Token) int { return bytes.Compare(a[:], b[:]) })
	return slices.Compact(out)
}

func tokenKey(keyID string, t Token) []byte {
	return append(append(make([]byte, 0, KeyIDLen+TokenSize), keyID...), t[:]...)
}

// tokenTx changes the token tables inside one write transaction.
type tokenTx struct{ tx *bolt.Tx }

func (t tokenTx) entry(id string) (*tokenEntry, error) {
	v := t.tx.Bucket(bucketTokenPatients).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	e, err := decodeTokenEntry(v)
	if err != nil {
		return nil, fmt.Errorf("tokens of patient %s: %w", id, err)
	}
	return e, nil
}

// replace records e as patient id's tokens (nil: none), moving each
// token's count and queueing the tokens whose first patient came or whose
// last one went.
func (t tokenTx) replace(id string, old, e *tokenEntry) error {
	var oldKey, newKey string
	if old != nil {
		oldKey = old.keyID
	}
	if e != nil {
		newKey = e.keyID
	}
	before, after := old.all(), e.all()
	for _, tok := range before {
		if newKey == oldKey && containsToken(after, tok) {
			continue
		}
		if err := t.ref(oldKey, tok, -1); err != nil {
			return err
		}
	}
	for _, tok := range after {
		if newKey == oldKey && containsToken(before, tok) {
			continue
		}
		if err := t.ref(newKey, tok, +1); err != nil {
			return err
		}
	}
	if e == nil {
		return t.tx.Bucket(bucketTokenPatients).Delete([]byte(id))
	}
	return t.tx.Bucket(bucketTokenPatients).Put([]byte(id), e.encode())
}

func containsToken(sorted []Token, t Token) bool {
	_, ok := slices.BinarySearchFunc(sorted, t, func(a, b Token) int { return bytes.Compare(a[:], b[:]) })
	return ok
}

// ref moves a token's count by delta and queues it when it crosses zero.
func (t tokenTx) ref(keyID string, tok Token, delta int) error {
	k := tokenKey(keyID, tok)
	refs := t.tx.Bucket(bucketTokenRefs)
	var n uint32
	if v := refs.Get(k); len(v) == 4 {
		n = binary.BigEndian.Uint32(v)
	}
	was := n
	switch {
	case delta > 0:
		n++
	case n > 0:
		n--
	}
	pub, wd := t.tx.Bucket(bucketTokenPublish), t.tx.Bucket(bucketTokenWithdraw)
	switch {
	case was == 0 && n > 0:
		if err := wd.Delete(k); err != nil {
			return err
		}
		if err := pub.Put(k, []byte{1}); err != nil {
			return err
		}
	case was > 0 && n == 0:
		if err := pub.Delete(k); err != nil {
			return err
		}
		if err := wd.Put(k, []byte{1}); err != nil {
			return err
		}
		return refs.Delete(k)
	}
	return refs.Put(k, binary.BigEndian.AppendUint32(nil, n))
}

// SetTokens records each patient's own tokens under its key, replacing
// what the patient had: a new key drops the tokens, aliases included, of
// the old one. A patient the store no longer holds loses its tokens. It
// returns how many patients' tokens changed; those already recorded as
// given are left alone.
func (s *Store) SetTokens(ctx context.Context, updates []PatientTokens) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	for _, u := range updates {
		if len(u.KeyID) != KeyIDLen {
			return 0, fmt.Errorf("set tokens of patient %s: key id must be %d characters", u.PatientID, KeyIDLen)
		}
		if len(u.Tokens) > 255 {
			return 0, fmt.Errorf("set tokens of patient %s: at most 255 tokens", u.PatientID)
		}
	}
	// Most calls at start find every patient as recorded: check in a read
	// transaction first, and write only when something changed.
	var changed []int
	err := s.db.View(func(tx *bolt.Tx) error {
		t := tokenTx{tx}
		for i, u := range updates {
			e, err := t.entry(u.PatientID)
			if err != nil {
				return err
			}
			exists := tx.Bucket(bucketPatients).Get([]byte(u.PatientID)) != nil
			if !exists && e == nil {
				continue
			}
			if !exists || e == nil || e.keyID != u.KeyID || !sameTokens(e.own, u.Tokens) {
				changed = append(changed, i)
			}
		}
		return nil
	})
	if err != nil || len(changed) == 0 {
		return 0, err
	}
	n := 0
	err = s.db.Update(func(tx *bolt.Tx) error {
		t := tokenTx{tx}
		for _, i := range changed {
			u := updates[i]
			old, err := t.entry(u.PatientID)
			if err != nil {
				return err
			}
			var e *tokenEntry
			if tx.Bucket(bucketPatients).Get([]byte(u.PatientID)) != nil {
				e = &tokenEntry{keyID: u.KeyID, own: sortedTokens(u.Tokens)}
				if old != nil && old.keyID == u.KeyID {
					e.aliases = old.aliases
				}
			}
			if err := t.replace(u.PatientID, old, e); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("set tokens: %w", err)
	}
	return n, nil
}

func sortedTokens(ts []Token) []Token {
	out := slices.Clone(ts)
	slices.SortFunc(out, func(a, b Token) int { return bytes.Compare(a[:], b[:]) })
	return slices.Compact(out)
}

func sameTokens(sorted, ts []Token) bool {
	return slices.Equal(sorted, sortedTokens(ts))
}

// AddAliasTokens records tokens a query confirmed for a patient: tokens of
// demographics another member registered the patient under, that a
// matched query showed. They stay with the patient (at most maxAliases,
// the oldest dropped first) until its tokens are recomputed under another
// key or it is deleted. Tokens under another key than the patient's, and
// tokens it has already, are ignored; it returns how many were added.
func (s *Store) AddAliasTokens(ctx context.Context, patientID, keyID string, tokens []Token, maxAliases int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	added := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		t := tokenTx{tx}
		old, err := t.entry(patientID)
		if err != nil || old == nil || old.keyID != keyID {
			return err
		}
		have := old.all()
		e := &tokenEntry{keyID: old.keyID, own: old.own, aliases: slices.Clone(old.aliases)}
		for _, tok := range sortedTokens(tokens) {
			if !containsToken(have, tok) {
				e.aliases = append(e.aliases, tok)
				added++
			}
		}
		if added == 0 {
			return nil
		}
		if len(e.aliases) > maxAliases {
			e.aliases = e.aliases[len(e.aliases)-maxAliases:]
		}
		return t.replace(patientID, old, e)
	})
	if err != nil {
		return 0, fmt.Errorf("add alias tokens of patient %s: %w", patientID, err)
	}
	return added, nil
}

// PatientTokensOf returns the key id and the own and alias tokens recorded
// for a patient (empty when none).
func (s *Store) PatientTokensOf(id string) (keyID string, own, aliases []Token, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		e, err := tokenTx{tx}.entry(id)
		if e != nil {
			keyID, own, aliases = e.keyID, e.own, e.aliases
		}
		return err
	})
	return keyID, own, aliases, err
}

// DeletePatient removes a patient with its documents and tokens; the
// tokens no other patient holds are queued for withdrawal. Deleting a
// patient the store does not hold is ErrNotFound.
func (s *Store) DeletePatient(ctx context.Context, id string) error {
	return s.Apply(ctx, Batch{DeletePatients: []string{id}})
}

// TokenChange is tokens under one key that the brokers must learn the
// member holds (Publish) or no longer holds.
type TokenChange struct {
	KeyID   string
	Publish bool
	Tokens  []Token
}

// PendingTokens returns up to max queued tokens, all under one key: tokens
// to publish first, then tokens to withdraw — a member rotating its key
// publishes the new key's tokens before it withdraws the old ones. ok is
// false when nothing is queued.
func (s *Store) PendingTokens(max int) (c TokenChange, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		for _, q := range []struct {
			bucket  []byte
			publish bool
		}{{bucketTokenPublish, true}, {bucketTokenWithdraw, false}} {
			cur := tx.Bucket(q.bucket).Cursor()
			for k, _ := cur.First(); k != nil && len(c.Tokens) < max; k, _ = cur.Next() {
				if len(k) != KeyIDLen+TokenSize {
					return fmt.Errorf("malformed queued token")
				}
				key := string(k[:KeyIDLen])
				if !ok {
					c, ok = TokenChange{KeyID: key, Publish: q.publish}, true
				}
				if key != c.KeyID {
					break
				}
				var t Token
				copy(t[:], k[KeyIDLen:])
				c.Tokens = append(c.Tokens, t)
			}
			if ok {
				return nil
			}
		}
		return nil
	})
	return c, ok, err
}

// AckTokens takes tokens the brokers have applied off their queue. A token
// whose direction changed meanwhile (withdrawn while its publication was
// in flight) stays queued the other way.
func (s *Store) AckTokens(c TokenChange) error {
	bucket := bucketTokenWithdraw
	if c.Publish {
		bucket = bucketTokenPublish
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for _, t := range c.Tokens {
			if err := b.Delete(tokenKey(c.KeyID, t)); err != nil {
				return err
			}
		}
		return nil
	})
}

// PendingTokenCount returns how many tokens are queued to publish and to
// withdraw.
func (s *Store) PendingTokenCount() (publish, withdraw int, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		publish = tx.Bucket(bucketTokenPublish).Stats().KeyN
		withdraw = tx.Bucket(bucketTokenWithdraw).Stats().KeyN
		return nil
	})
	return publish, withdraw, err
}

// TokenCounts returns how many distinct tokens the store's patients hold,
// by key id.
func (s *Store) TokenCounts() (map[string]int, error) {
	out := map[string]int{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTokenRefs).ForEach(func(k, _ []byte) error {
			if len(k) == KeyIDLen+TokenSize {
				out[string(k[:KeyIDLen])]++
			}
			return nil
		})
	})
	return out, err
}

// PatientsAfter returns up to n patients in id order, starting after the id
// after ("" for the first), for work over every patient in batches without
// one long read transaction.
func (s *Store) PatientsAfter(after string, n int) ([]Patient, error) {
	var out []Patient
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketPatients).Cursor()
		k, v := c.First()
		if after != "" {
			k, v = c.Seek([]byte(after))
			if k != nil && string(k) == after {
				k, v = c.Next()
			}
		}
		for ; k != nil && len(out) < n; k, v = c.Next() {
			d, err := unmarshalDemographics(k, v)
			if err != nil {
				return err
			}
			out = append(out, Patient{ID: string(k), Demographics: d})
		}
		return nil
	})
	return out, err
}

// TokenPatientsWithout returns the ids of patients that have tokens
// recorded but are no longer in the store (removed by a tool that does not
// keep tokens), up to n, starting after after.
func (s *Store) TokenPatientsWithout(after string, n int) (ids []string, next string, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketTokenPatients).Cursor()
		k, _ := c.First()
		if after != "" {
			k, _ = c.Seek([]byte(after))
			if k != nil && string(k) == after {
				k, _ = c.Next()
			}
		}
		seen := 0
		for ; k != nil && seen < n; k, _ = c.Next() {
			seen++
			next = string(k)
			if tx.Bucket(bucketPatients).Get(k) == nil {
				ids = append(ids, string(k))
			}
		}
		if k == nil {
			next = ""
		}
		return nil
	})
	return ids, next, err
}

// DropTokens forgets the tokens of patients the store no longer holds,
// queueing the tokens no one else holds for withdrawal.
func (s *Store) DropTokens(ctx context.Context, ids []string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		t := tokenTx{tx}
		for _, id := range ids {
			if tx.Bucket(bucketPatients).Get([]byte(id)) != nil {
				continue
			}
			old, err := t.entry(id)
			if err != nil || old == nil {
				return err
			}
			if err := t.replace(id, old, nil); err != nil {
				return err
			}
		}
		return nil
	})
}
