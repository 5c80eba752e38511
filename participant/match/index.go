package match

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
)

// Result is one patient found by [Index.Search].
type Result struct {
	// ID is the member's local patient id given to [Index.Add].
	ID string
	// Score is the probability that the patient is the person searched
	// for ([Pair.Score]).
	Score float64
	// Pair explains the score: each field's level and weight, and the
	// decision (match or possible).
	Pair Pair
}

// Index finds the patients of one member that may match a query without
// comparing every patient, and scores them with its [Model]. Each patient
// is filed under a few blocking keys, chosen so that an error or a gap in
// any one field still leaves the patient in a block the query looks in (see
// [BlockingKeys]); a search compares the union of the query's blocks. The
// index also counts how common each name, postal code and city is among its
// patients, to weigh agreement on them ([TermFrequencies]).
//
// An Index is safe for concurrent use. The zero value is not usable; call
// [NewIndex].
type Index struct {
	model atomic.Pointer[Model]

	mu     sync.RWMutex
	slots  map[string]uint32   // patient id → slot
	ids    []string            // slot → patient id ("" when free)
	recs   []prepared          // slot → record
	free   []uint32            // free slots
	blocks map[uint64][]uint32 // hash of a blocking key → slots
	tf     TermFrequencies
}

// NewIndex returns an empty index that scores with [DefaultModel].
func NewIndex() *Index {
	x := &Index{
		slots:  make(map[string]uint32),
		blocks: make(map[uint64][]uint32),
	}
	x.model.Store(DefaultModel())
	return x
}

// Model returns the model the index scores with.
func (x *Index) Model() *Model { return x.model.Load() }

// SetModel makes the index score with m from now on.
func (x *Index) SetModel(m *Model) { x.model.Store(m) }

// Len returns the number of patients in the index.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.slots)
}

// Records returns a copy of every indexed record, in no particular order.
func (x *Index) Records() []Record {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := make([]Record, 0, len(x.slots))
	for slot, id := range x.ids {
		if id != "" {
			out = append(out, x.recs[slot].Record)
		}
	}
	return out
}

// Add files the record r of patient id, replacing any record id had.
func (x *Index) Add(id string, r Record) {
	x.Update([]Entry{{ID: id, Record: r}}, nil)
}

// Entry is one patient's record, for [Index.Update].
type Entry struct {
	ID     string
	Record Record
}

// Update removes the patients of remove, then files every entry of add
// (replacing the records they had), as one change: a search sees either
// none of it or all of it.
func (x *Index) Update(add []Entry, remove []string) {
	type filed struct {
		p    prepared
		keys []uint64
	}
	prepped := make([]filed, len(add))
	for i, e := range add {
		r := e.Record
		r.Given = slices.Clone(r.Given) // the caller may reuse its slice
		p := prepare(r)
		prepped[i] = filed{p: p, keys: blockKeys(&p, make([]uint64, 0, numKeys))}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, id := range remove {
		x.removeLocked(id)
	}
	for i, e := range add {
		x.addLocked(e.ID, prepped[i].p, prepped[i].keys)
	}
}

// addLocked files p under keys for patient id. x.mu is held.
func (x *Index) addLocked(id string, p prepared, keys []uint64) {
	slot, ok := x.slots[id]
	if ok {
		x.unfile(slot)
	} else {
		if n := len(x.free); n > 0 {
			slot = x.free[n-1]
			x.free = x.free[:n-1]
		} else {
			slot = uint32(len(x.ids))
			x.ids = append(x.ids, "")
			x.recs = append(x.recs, prepared{})
		}
		x.slots[id] = slot
		x.ids[slot] = id
	}
	x.recs[slot] = p
	x.tf.add(&x.recs[slot], 1)
	for _, k := range keys {
		x.blocks[k] = append(x.blocks[k], slot)
	}
}

// Remove removes patient id from the index; it does nothing if id is absent.
func (x *Index) Remove(id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.removeLocked(id)
}

func (x *Index) removeLocked(id string) {
	slot, ok := x.slots[id]
	if !ok {
		return
	}
	x.unfile(slot)
	delete(x.slots, id)
	x.ids[slot] = ""
	x.recs[slot] = prepared{}
	x.free = append(x.free, slot)
}

// unfile removes slot from the blocks and counts of its record. x.mu is
// held.
func (x *Index) unfile(slot uint32) {
	x.tf.add(&x.recs[slot], -1)
	var kbuf [numKeys]uint64
	for _, k := range blockKeys(&x.recs[slot], kbuf[:0]) {
		b := x.blocks[k]
		i := slices.Index(b, slot)
		if i < 0 {
			continue
		}
		last := len(b) - 1
		b[i] = b[last]
		if last == 0 {
			delete(x.blocks, k)
		} else {
			x.blocks[k] = b[:last]
		}
	}
}

// Bounds on the work of one search. A search looks in the query's blocks
// smallest first, the most telling keys (phone, birth date, address) before
// the common ones, and skips a block that would take it past
// maxCandidates (each candidate costs a few cache misses in an index of a
// million), as it skips any block larger than maxBlock: such a key is
// too common to tell anyone apart (every "Smith, J…" born in 1980 in a big
// index), and the query's other keys still find its person.
const (
	maxBlock      = 4096
	maxCandidates = 128
)

// Search returns the patients whose score against q is at least threshold,
// best first (ties by id), at most limit of them; limit <= 0 means no
// limit. Only patients sharing a blocking key with q are compared.
func (x *Index) Search(q Record, threshold float64, limit int) []Result {
	m := x.model.Load()
	p := prepare(q)
	var kbuf [numKeys]uint64
	keys := blockKeys(&p, kbuf[:0])
	x.mu.RLock()
	defer x.mu.RUnlock()
	var bbuf [numKeys][]uint32
	cands := make([]uint32, 0, 64)
	for _, b := range x.blocksOf(keys, bbuf[:0]) {
		if len(cands)+len(b) > maxCandidates {
			continue
		}
		cands = append(cands, b...)
	}
	slices.Sort(cands)
	cands = slices.Compact(cands)
	var out []Result
	for _, slot := range cands {
		pair := m.compare(&p, &x.recs[slot], &x.tf)
		if s := pair.Score(); s >= threshold && s > 0 {
			out = append(out, Result{ID: x.ids[slot], Score: s, Pair: pair})
		}
	}
	slices.SortFunc(out, func(a, b Result) int {
		if c := cmp.Compare(b.Score, a.Score); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit:limit]
	}
	return out
}

// blocksOf appends the blocks of keys to dst, smallest first, leaving out
// empty blocks and blocks larger than maxBlock. x.mu is held.
func (x *Index) blocksOf(keys []uint64, dst [][]uint32) [][]uint32 {
	for _, k := range keys {
		if b := x.blocks[k]; len(b) > 0 && len(b) <= maxBlock {
			dst = append(dst, b)
		}
	}
	slices.SortStableFunc(dst, func(a, b []uint32) int { return cmp.Compare(len(a), len(b)) })
	return dst
}

// numKeys is the largest number of blocking keys of a record.
const numKeys = 10

// BlockingKeys appends to dst the blocking keys of r, as 64-bit hashes: two
// records that may be the same person share at least one of them unless
// several fields differ at once. The broker's person merge can use them to
// compare only candidates that share a key.
func BlockingKeys(r Record, dst []uint64) []uint64 {
	p := prepare(r)
	return blockKeys(&p, dst)
}

// blockKeys appends the hashes of the blocking keys of r to keys. A key
// starts with a letter naming its rule; a rule whose fields r lacks gives
// no key:
//
//	d  birth date                                        d19800229
//	f  family name's Soundex, birth year                 fS5301980
//	g  first given name's first 3 letters, birth year    gjoh1980
//	n  family name's Soundex, first given name's          nS530joh
//	   first 3 letters (finds records without a birth
//	   date, or with a typo in its year)
//	p  phone, last 10 digits                             p6175550123
//	z  postal code (or city), first given name's first   z02139|joh
//	   3 letters (finds a record without a birth date
//	   whose family name has a typo that changes its
//	   Soundex code)
//	a  address line and postal code (or city)            a12 elm st|60614
//	h  house number and postal code                      h12|60614
//	w  family name's Soundex and postal code             wS530|60614
//	k  family name's Soundex and city                    kS530|chicago
//	   (these three find a record whose names and birth
//	   date both have errors, by where the person lives)
//
// Given names are taken in canonical (nickname-resolved) form and family
// names with their parts joined. Keys are kept as 64-bit hashes, which
// halves the memory of the block map; a collision only merges two blocks.
func blockKeys(r *prepared, keys []uint64) []uint64 {
	var buf [64]byte
	var given string
	if len(r.Given) > 0 {
		given = prefixRunes(r.CanonicalFirstName(), 3)
	}
	var sound []byte
	if r.familyJoined != "" {
		sound = appendSoundex(buf[32:32], r.familyJoined)
	}
	if r.HasBirthDate() {
		date := strconv.AppendInt(buf[:0], int64(r.BirthYear*10000+r.BirthMonth*100+r.BirthDay), 10)
		keys = append(keys, hashKey('d', date, ""))
		year := date[:len(date)-4]
		if sound != nil {
			keys = append(keys, hashKey('f', append(sound, year...), ""))
		}
		if given != "" {
			keys = append(keys, hashKey('g', year, given))
		}
	}
	if sound != nil && given != "" {
		keys = append(keys, hashKey('n', sound, given))
	}
	if ph := r.Phone; ph != "" {
		if len(ph) > 10 {
			ph = ph[len(ph)-10:]
		}
		keys = append(keys, hashStrings('p', ph, ""))
	}
	switch {
	case given == "":
	case r.PostalCode != "":
		keys = append(keys, hashStrings('z', r.PostalCode, given))
	case r.City != "":
		keys = append(keys, hashStrings('z', r.City, given))
	}
	if r.Street != "" {
		switch {
		case r.PostalCode != "":
			keys = append(keys, hashStrings('a', r.Street, r.PostalCode))
		case r.City != "":
			keys = append(keys, hashStrings('a', r.Street, r.City))
		}
	}
	if r.streetNum != "" && r.PostalCode != "" {
		keys = append(keys, hashStrings('h', r.streetNum, r.PostalCode))
	}
	if sound != nil && r.PostalCode != "" {
		keys = append(keys, hashKey('w', sound, r.PostalCode))
	}
	if sound != nil && r.City != "" {
		keys = append(keys, hashKey('k', sound, r.City))
	}
	return keys
}

// hashKey returns the 64-bit FNV-1a hash of kind, a and b.
func hashKey(kind byte, a []byte, b string) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	h = (h ^ uint64(kind)) * prime
	for _, c := range a {
		h = (h ^ uint64(c)) * prime
	}
	h = (h ^ '|') * prime
	for i := 0; i < len(b); i++ {
		h = (h ^ uint64(b[i])) * prime
	}
	return h
}

// hashStrings is hashKey for two strings.
func hashStrings(kind byte, a, b string) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	h = (h ^ uint64(kind)) * prime
	for i := 0; i < len(a); i++ {
		h = (h ^ uint64(a[i])) * prime
	}
	h = (h ^ '|') * prime
	for i := 0; i < len(b); i++ {
		h = (h ^ uint64(b[i])) * prime
	}
	return h
}

// prefixRunes returns the first n runes of s.
func prefixRunes(s string, n int) string {
	for i := range s {
		if n == 0 {
			return s[:i]
		}
		n--
	}
	return s
}

// appendSoundex appends the American Soundex code of a normalized name to
// dst ("smith" and "smyth" → "S530"), ignoring spaces and digits. A name
// that does not start with a letter a-z is coded by "~" and its first three
// runes instead.
func appendSoundex(dst []byte, name string) []byte {
	i := 0
	for i < len(name) && name[i] == ' ' {
		i++
	}
	if i == len(name) || name[i] < 'a' || name[i] > 'z' {
		return append(append(dst, '~'), prefixRunes(name[i:], 3)...)
	}
	code := [4]byte{name[i] - 'a' + 'A', '0', '0', '0'}
	n := 1
	last := soundexDigit(name[i])
	for j := i + 1; j < len(name) && n < len(code); j++ {
		c := name[j]
		if c < 'a' || c > 'z' {
			continue
		}
		d := soundexDigit(c)
		switch {
		case d == 0 && (c == 'h' || c == 'w'):
			// h and w do not separate letters of the same code.
			continue
		case d == 0:
			last = 0
		case d != last:
			code[n] = d
			n++
			last = d
		}
	}
	return append(dst, code[:]...)
}

// soundexDigit returns the Soundex digit of a lowercase letter, or 0 for a
// vowel, h, w and y.
func soundexDigit(c byte) byte {
	switch c {
	case 'b', 'f', 'p', 'v':
		return '1'
	case 'c', 'g', 'j', 'k', 'q', 's', 'x', 'z':
		return '2'
	case 'd', 't':
		return '3'
	case 'l':
		return '4'
	case 'm', 'n':
		return '5'
	case 'r':
		return '6'
	}
	return 0
}

// Train fits the index's model to its own records with [Train], starting
// from the model it scores with, and scores with the result from then on.
// A member's records hold few duplicates, so EM usually keeps the base
// model's m and learns the member's own u (how often strangers agree) and
// term frequencies; the prior stays the base model's.
func (x *Index) Train(ctx context.Context, opts TrainOptions) (TrainReport, error) {
	opts.EstimatePrior = false
	base := x.Model()
	m, rep, err := Train(ctx, x.Records(), nil, base, opts)
	if err != nil {
		return rep, err
	}
	x.model.CompareAndSwap(base, m)
	return rep, nil
}
