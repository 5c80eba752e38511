package synth

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Defaults applied to zero Options fields.
const (
	DefaultSharedFraction = 0.3
	DefaultMaxDocuments   = 3
)

// SSNSystem is the identifier system of generated Social Security numbers.
const SSNSystem = "http://hl7.org/fhir/sid/us-ssn"

// defaultNow is the reference day used when Options.Now is zero.
var defaultNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// MRNSystem returns the identifier system of the MRNs issued by
// Options.Participants[i]: an OID under the example arc 2.999, so that it can
// never collide with a real assigning authority.
func MRNSystem(i int) string { return "urn:oid:2.999.7204." + strconv.Itoa(i+1) }

// Options describe a population. The same Options, Seed included, always
// produce byte-identical output.
type Options struct {
	// Seed selects the population.
	Seed int64
	// Persons is how many distinct people to generate.
	Persons int
	// Participants are the member ids people are registered at, for example
	// p1, p2, p3. The order matters: it picks each member's MRN system.
	Participants []string
	// SharedFraction is the share of persons registered at two or more
	// members: DefaultSharedFraction when zero, none when negative. It has no
	// effect with a single participant.
	SharedFraction float64
	// MaxDocuments bounds the documents of one registration, which gets
	// between 0 and MaxDocuments of them: DefaultMaxDocuments when zero, none
	// when negative.
	MaxDocuments int
	// Now is the day ages and document dates are relative to: birth dates
	// fall in the 96 years before it, documents in the 10 years before it.
	// Zero means 2026-01-01 UTC, so that output does not depend on the
	// clock.
	Now time.Time
}

// Registration is one person's record at one member.
//
// Generate emits the registrations of a person one after the other; the first
// carries the person's true demographics, later ones the Variations listed
// in them.
type Registration struct {
	// ParticipantID is the member holding the record.
	ParticipantID string
	// PatientID is the member's local id for the record, for example
	// "p2-000123"; it is also the value of the record's MRN identifier.
	PatientID string
	// PersonID is the ground truth: the same for every registration of one
	// person, different between people.
	PersonID string
	// Demographics are the traits as the member recorded them.
	Demographics *qhinv1.Demographics
	// Variations says how Demographics differ from the person's true
	// demographics: always zero for the first registration of a person,
	// and zero too for a later one that copies it exactly.
	Variations Variation
	// Documents the member holds for this record, oldest first.
	Documents []Document
}

// Document is a generated clinical document. Meta leaves Size and Sha256 to
// the store that takes the content.
type Document struct {
	Meta    *qhinv1.DocumentMetadata
	Content []byte
}

// Generate calls fn for every registration of the population opts describes,
// in a fixed order: person by person, each person's registrations together,
// the first of them the true one. It returns the first error fn returns,
// unchanged, without calling fn again. Every Registration is freshly
// allocated, so fn may keep it; Generate itself holds only one person at a
// time.
//
// Person i is the same whatever Persons is, so a smaller population is a
// prefix of a larger one with the same seed.
func Generate(opts Options, fn func(Registration) error) error {
	g, err := newGenerator(opts)
	if err != nil {
		return err
	}
	for i := range opts.Persons {
		if err := g.emitPerson(i, fn); err != nil {
			return err
		}
	}
	return nil
}

// Probabilities of the population model.
const (
	pFemale      = 0.51
	pMiddleName  = 0.75
	pHasSSN      = 0.8  // a person has an SSN on file somewhere
	pRecordSSN   = 0.6  // a member recorded a known SSN
	pExtraMember = 0.3  // a shared person is at one more member
	pSecondLine  = 0.15 // an address has an apartment or unit line
	pDirection   = 0.1  // a street has a direction prefix
	pFHIR        = 0.7  // a document is FHIR JSON rather than a text note
	docYears     = 10   // documents are at most this many years old
)

// ageBands approximate the US age distribution (census, in percent) by
// five-year bands; the last band ends at 96 years.
var ageBands = []struct {
	fromYears int
	weight    float64
}{
	{0, 5.7}, {5, 6.0}, {10, 6.3}, {15, 6.4}, {20, 6.4}, {25, 6.8}, {30, 7.0}, {35, 6.6}, {40, 6.3}, {45, 6.0},
	{50, 6.3}, {55, 6.4}, {60, 6.3}, {65, 5.6}, {70, 4.6}, {75, 3.2}, {80, 2.0}, {85, 1.2}, {90, 0.9},
}

const maxAgeYears = 96

// generator holds the state of one Generate call. Each person draws from the
// PCG reseeded with (seed, person index), so person i does not depend on the
// people before it; only the per-member patient numbers run across persons.
type generator struct {
	participants []string
	systems      []string
	shared       float64
	maxDocs      int
	now          time.Time
	today        int64 // Unix day of now
	bandDays     []int64
	bandCum      []float64

	seed    uint64
	ssnOff  uint64
	pcg     *rand.PCG
	rng     *rand.Rand
	next    []int // next patient number per member
	members []int // scratch: members of the current person
	times   []int64
	buf     []byte // scratch for building strings
	div     []byte // scratch for FHIR narrative
	p       person
}

func newGenerator(opts Options) (*generator, error) {
	if opts.Persons < 0 {
		return nil, fmt.Errorf("synth: negative persons %d", opts.Persons)
	}
	if len(opts.Participants) == 0 {
		return nil, errors.New("synth: no participants")
	}
	seen := make(map[string]bool, len(opts.Participants))
	for _, id := range opts.Participants {
		if id == "" {
			return nil, errors.New("synth: empty participant id")
		}
		if seen[id] {
			return nil, fmt.Errorf("synth: duplicate participant %s", id)
		}
		seen[id] = true
	}
	shared := opts.SharedFraction
	switch {
	case math.IsNaN(shared) || shared > 1:
		return nil, fmt.Errorf("synth: shared fraction %v not in [0, 1]", shared)
	case shared == 0:
		shared = DefaultSharedFraction
	case shared < 0:
		shared = 0
	}
	if len(opts.Participants) == 1 {
		shared = 0
	}
	maxDocs := opts.MaxDocuments
	switch {
	case maxDocs == 0:
		maxDocs = DefaultMaxDocuments
	case maxDocs < 0:
		maxDocs = 0
	}
	now := opts.Now
	if now.IsZero() {
		now = defaultNow
	}
	now = now.UTC()

	g := &generator{
		participants: opts.Participants,
		systems:      make([]string, len(opts.Participants)),
		shared:       shared,
		maxDocs:      maxDocs,
		now:          now,
		today:        unixDay(now),
		seed:         splitmix64(uint64(opts.Seed)),
		next:         make([]int, len(opts.Participants)),
		buf:          make([]byte, 0, 4096),
	}
	for i := range g.systems {
		g.systems[i] = MRNSystem(i)
		g.next[i] = 1
	}
	g.ssnOff = splitmix64(g.seed) % ssnSpace
	g.pcg = rand.NewPCG(g.seed, 0)
	g.rng = rand.New(g.pcg)

	midnight := time.Unix(g.today*secondsPerDay, 0).UTC()
	cum := 0.0
	for _, b := range ageBands {
		g.bandDays = append(g.bandDays, g.today-unixDay(midnight.AddDate(-b.fromYears, 0, 0)))
		cum += b.weight
		g.bandCum = append(g.bandCum, cum)
	}
	g.bandDays = append(g.bandDays, g.today-unixDay(midnight.AddDate(-maxAgeYears, 0, 0)))
	return g, nil
}

// emitPerson generates person i and hands each of its registrations to fn.
func (g *generator) emitPerson(i int, fn func(Registration) error) error {
	g.pcg.Seed(g.seed, splitmix64(uint64(i)))
	p := &g.p
	g.newPerson(p, i)
	g.chooseMembers()
	for j, m := range g.members {
		var v Variation
		if j > 0 {
			v = g.chooseVariations(p)
		}
		if err := fn(g.registration(p, m, v)); err != nil {
			return err
		}
	}
	return nil
}

// chooseMembers fills g.members with the distinct members the current person
// is registered at, the first one holding the true record.
func (g *generator) chooseMembers() {
	n := len(g.participants)
	k := 1
	if g.shared > 0 && g.rng.Float64() < g.shared {
		k = 2
		for k < n && g.rng.Float64() < pExtraMember {
			k++
		}
	}
	g.members = g.members[:0]
	for len(g.members) < k {
		m := g.rng.IntN(n)
		dup := false
		for _, c := range g.members {
			dup = dup || c == m
		}
		if !dup {
			g.members = append(g.members, m)
		}
	}
}

// registration builds the record of p at member m with variations v.
func (g *generator) registration(p *person, m int, v Variation) Registration {
	b := append(g.buf[:0], g.participants[m]...)
	b = append(b, '-')
	b = appendPadded(b, g.next[m], 6)
	g.next[m]++
	patientID := string(b)

	d, applied := g.demographics(p, v)
	ids := make([]*qhinv1.Identifier, 1, 2)
	ids[0] = &qhinv1.Identifier{System: g.systems[m], Value: patientID, Type: "MR"}
	if p.ssn != "" && g.rng.Float64() < pRecordSSN {
		ids = append(ids, &qhinv1.Identifier{System: SSNSystem, Value: p.ssn, Type: "SS"})
	}
	d.Identifiers = ids

	reg := Registration{
		ParticipantID: g.participants[m],
		PatientID:     patientID,
		PersonID:      p.id,
		Demographics:  d,
		Variations:    applied,
	}
	reg.Documents = g.documents(p, &reg)
	return reg
}

const secondsPerDay = 86400

// unixDay returns the number of days from 1970-01-01 to t's date in UTC.
func unixDay(t time.Time) int64 {
	s := t.Unix()
	d := s / secondsPerDay
	if s%secondsPerDay < 0 {
		d--
	}
	return d
}

// splitmix64 scrambles x so that nearby inputs give unrelated PCG seeds.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// appendPadded appends n in decimal, zero-padded to at least width digits.
func appendPadded(b []byte, n, width int) []byte {
	var tmp [20]byte
	d := strconv.AppendInt(tmp[:0], int64(n), 10)
	for i := len(d); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, d...)
}

// pickSkewed returns an element of list, favouring the front: the chance of
// index i falls linearly from about 2/n to 0.
func pickSkewed(rng *rand.Rand, list []string) string {
	n := len(list)
	return list[min(rng.IntN(n), rng.IntN(n))]
}

// errFound stops Generate once SharedPerson has its person.
var errFound = errors.New("found")

// SharedPerson returns the first person of the population opts describes
// whom every one of members holds with the person's true demographics, no
// variation at any of them (among other members' registrations, which may
// vary): a person a query by yet another member finds at each of them. It
// returns the registrations at members, in that order.
func SharedPerson(opts Options, members ...string) ([]Registration, error) {
	if len(members) == 0 {
		return nil, errors.New("synth: SharedPerson needs members")
	}
	var found []Registration
	var cur []Registration
	check := func() bool {
		var out []Registration
		for _, m := range members {
			i := slices.IndexFunc(cur, func(r Registration) bool { return r.ParticipantID == m })
			if i < 0 || cur[i].Variations != 0 {
				return false
			}
			out = append(out, cur[i])
		}
		found = out
		return true
	}
	err := Generate(opts, func(r Registration) error {
		if len(cur) > 0 && cur[0].PersonID != r.PersonID {
			if check() {
				return errFound
			}
			cur = cur[:0]
		}
		cur = append(cur, r)
		return nil
	})
	if err == nil && check() {
		err = errFound
	}
	if !errors.Is(err, errFound) {
		if err == nil {
			err = fmt.Errorf("synth: no person registered unchanged at %s", strings.Join(members, ", "))
		}
		return nil, err
	}
	return found, nil
}
