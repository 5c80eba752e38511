package match

import (
	"cmp"
	"slices"
	"strconv"
	"sync"
)

// Result is one patient found by [Index.Search].
type Result struct {
	// ID is the member's local patient id given to [Index.Add].
	ID string
	// Score is the [Score] of the patient against the query.
	Score float64
}

// Index finds the patients of one member that may match a query without
// scoring every patient. Each patient is filed under a few blocking keys
// (its exact birth date; its family name's sound and birth year; its first
// given name and birth year and month; its family name's sound and first
// given name), chosen so that an error in any one field still leaves the
// patient in a block the query looks in. A search scores the union of the
// query's blocks.
//
// An Index is safe for concurrent use. The zero value is not usable; call
// [NewIndex].
type Index struct {
	mu     sync.RWMutex
	slots  map[string]uint32   // patient id → slot
	ids    []string            // slot → patient id ("" when free)
	recs   []Record            // slot → record
	free   []uint32            // free slots
	blocks map[uint64][]uint32 // hash of a blocking key → slots
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{
		slots:  make(map[string]uint32),
		blocks: make(map[uint64][]uint32),
	}
}

// Len returns the number of patients in the index.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.slots)
}

// Add files the record r of patient id, replacing any record id had.
func (x *Index) Add(id string, r Record) {
	r.Given = slices.Clone(r.Given) // the caller may reuse its slice
	var kbuf [numKeys]uint64
	keys := blockKeys(r, kbuf[:0])
	x.mu.Lock()
	defer x.mu.Unlock()
	slot, ok := x.slots[id]
	if ok {
		x.unblock(slot)
	} else {
		if n := len(x.free); n > 0 {
			slot = x.free[n-1]
			x.free = x.free[:n-1]
		} else {
			slot = uint32(len(x.ids))
			x.ids = append(x.ids, "")
			x.recs = append(x.recs, Record{})
		}
		x.slots[id] = slot
		x.ids[slot] = id
	}
	x.recs[slot] = r
	for _, k := range keys {
		x.blocks[k] = append(x.blocks[k], slot)
	}
}

// Remove removes patient id from the index; it does nothing if id is absent.
func (x *Index) Remove(id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	slot, ok := x.slots[id]
	if !ok {
		return
	}
	x.unblock(slot)
	delete(x.slots, id)
	x.ids[slot] = ""
	x.recs[slot] = Record{}
	x.free = append(x.free, slot)
}

// unblock removes slot from the blocks of its record. x.mu is held.
func (x *Index) unblock(slot uint32) {
	var kbuf [numKeys]uint64
	for _, k := range blockKeys(x.recs[slot], kbuf[:0]) {
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

// Search returns the patients whose score against q is at least threshold,
// best first (ties by id), at most limit of them; limit <= 0 means no
// limit. Only patients sharing a blocking key with q are scored, so a query
// with neither a birth date nor both names finds nothing.
func (x *Index) Search(q Record, threshold float64, limit int) []Result {
	var kbuf [numKeys]uint64
	keys := blockKeys(q, kbuf[:0])
	x.mu.RLock()
	defer x.mu.RUnlock()
	n := 0
	for _, k := range keys {
		n += len(x.blocks[k])
	}
	cands := make([]uint32, 0, n)
	for _, k := range keys {
		cands = append(cands, x.blocks[k]...)
	}
	slices.Sort(cands)
	cands = slices.Compact(cands)
	var out []Result
	for _, slot := range cands {
		if s := Score(q, x.recs[slot]); s >= threshold {
			out = append(out, Result{ID: x.ids[slot], Score: s})
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

// numKeys is the largest number of blocking keys of a record.
const numKeys = 4

// blockKeys appends the hashes of the blocking keys of r to keys. A key
// starts with a letter naming its kind:
//
//	d  birth date                                  d19800229
//	f  family name sound, birth year               fS5301980
//	g  first given name's first 3 letters,         gjoh198002
//	   birth year and month
//	n  family name sound, first given name's       nS530joh
//	   first 3 letters (also finds records whose
//	   birth date is missing or has a typo in the year)
//
// Given names are taken in canonical (nickname-resolved) form. Keys are
// kept as 64-bit hashes, which halves the memory of the block map; a
// collision only merges two blocks.
func blockKeys(r Record, keys []uint64) []uint64 {
	var buf [64]byte
	var given string
	if len(r.Given) > 0 {
		given = prefixRunes(r.CanonicalFirstName(), 3)
	}
	if r.HasBirthDate() {
		date := strconv.AppendInt(buf[:0], int64(r.BirthYear*10000+r.BirthMonth*100+r.BirthDay), 10)
		keys = append(keys, hashKey('d', date, ""))
		year, yearMonth := date[:len(date)-4], date[:len(date)-2]
		if r.Family != "" {
			sound := appendSoundex(buf[len(date):len(date)], r.Family)
			keys = append(keys, hashKey('f', append(sound, year...), ""))
		}
		if given != "" {
			keys = append(keys, hashKey('g', yearMonth, given))
		}
	}
	if r.Family != "" && given != "" {
		keys = append(keys, hashKey('n', appendSoundex(buf[:0], r.Family), given))
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
