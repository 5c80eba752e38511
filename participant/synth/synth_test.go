package synth

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

var three = []string{"p1", "p2", "p3"}

// collect returns every registration of opts.
func collect(t testing.TB, opts Options) []Registration {
	t.Helper()
	var regs []Registration
	if err := Generate(opts, func(r Registration) error {
		regs = append(regs, r)
		return nil
	}); err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return regs
}

// hashRegistration feeds everything a registration holds into h.
func hashRegistration(t testing.TB, h hash.Hash, r Registration) {
	t.Helper()
	marshal := proto.MarshalOptions{Deterministic: true}
	fmt.Fprintf(h, "%s|%s|%s|%d|", r.ParticipantID, r.PatientID, r.PersonID, r.Variations)
	b, err := marshal.Marshal(r.Demographics)
	if err != nil {
		t.Fatal(err)
	}
	h.Write(b)
	for _, d := range r.Documents {
		b, err := marshal.Marshal(d.Meta)
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
		h.Write(d.Content)
	}
}

// digest returns a hash of the whole output of opts.
func digest(t testing.TB, opts Options) [32]byte {
	t.Helper()
	h := sha256.New()
	if err := Generate(opts, func(r Registration) error {
		hashRegistration(t, h, r)
		return nil
	}); err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return [32]byte(h.Sum(nil))
}

func TestGenerate_SameOptionsSameOutput(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"defaults", Options{Seed: 1, Persons: 2000, Participants: three}},
		{"no documents", Options{Seed: 7, Persons: 2000, Participants: three, MaxDocuments: -1}},
		{"one member", Options{Seed: -3, Persons: 500, Participants: []string{"solo"}}},
		{"all shared, many documents", Options{Seed: 99, Persons: 300, Participants: []string{"a", "b", "c", "d", "e"}, SharedFraction: 1, MaxDocuments: 8}},
		{"other now", Options{Seed: 5, Persons: 500, Participants: three, Now: time.Date(2011, 6, 15, 13, 0, 0, 0, time.UTC)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, second := digest(t, tt.opts), digest(t, tt.opts)
			if first != second {
				t.Fatal("two runs with the same options differ")
			}
			other := tt.opts
			other.Seed++
			if digest(t, other) == first {
				t.Fatal("a different seed gives the same output")
			}
			// Not just somewhere: the people themselves differ.
			a, b := collect(t, tt.opts), collect(t, other)
			same := 0
			for i := range min(len(a), len(b)) {
				da, db := a[i].Demographics, b[i].Demographics
				if da.Given == db.Given && da.Family == db.Family && da.BirthDate == db.BirthDate {
					same++
				}
			}
			if same > len(a)/100 {
				t.Fatalf("%d of %d registrations name the same person under another seed", same, len(a))
			}
		})
	}
}

func TestGenerate_SmallerPopulationIsPrefix(t *testing.T) {
	opts := Options{Seed: 11, Persons: 300, Participants: three, MaxDocuments: 2}
	small := collect(t, opts)
	opts.Persons = 900
	large := collect(t, opts)
	if len(large) <= len(small) {
		t.Fatalf("%d registrations for 900 persons, %d for 300", len(large), len(small))
	}
	for i, r := range small {
		h1, h2 := sha256.New(), sha256.New()
		hashRegistration(t, h1, r)
		hashRegistration(t, h2, large[i])
		if string(h1.Sum(nil)) != string(h2.Sum(nil)) {
			t.Fatalf("registration %d (%s) differs between 300 and 900 persons", i, r.PatientID)
		}
	}
}

func TestGenerate_Counts(t *testing.T) {
	tests := []struct {
		name         string
		participants []string
		shared       float64
		wantShared   float64
	}{
		{"default fraction", three, 0, DefaultSharedFraction},
		{"half", three, 0.5, 0.5},
		{"all", three, 1, 1},
		{"none", three, -1, 0},
		{"one member cannot share", []string{"solo"}, 0.5, 0},
		{"two members", []string{"p1", "p2"}, 0.4, 0.4},
		{"many members", []string{"a", "b", "c", "d", "e", "f", "g", "h"}, 0.3, 0.3},
	}
	const persons = 20000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			regs := collect(t, Options{Seed: 3, Persons: persons, Participants: tt.participants, SharedFraction: tt.shared, MaxDocuments: -1})
			members := map[string][]string{} // person → members, in order
			patientIDs := map[string]bool{}
			var order []string
			for _, r := range regs {
				if len(order) == 0 || order[len(order)-1] != r.PersonID {
					if _, seen := members[r.PersonID]; seen {
						t.Fatalf("registrations of %s are not together", r.PersonID)
					}
					order = append(order, r.PersonID)
					if r.Variations != 0 {
						t.Fatalf("first registration of %s has variations %v", r.PersonID, r.Variations)
					}
				}
				if slices.Contains(members[r.PersonID], r.ParticipantID) {
					t.Fatalf("%s registered twice at %s", r.PersonID, r.ParticipantID)
				}
				if !slices.Contains(tt.participants, r.ParticipantID) {
					t.Fatalf("registration at unknown member %s", r.ParticipantID)
				}
				members[r.PersonID] = append(members[r.PersonID], r.ParticipantID)
				if patientIDs[r.PatientID] {
					t.Fatalf("patient id %s used twice", r.PatientID)
				}
				patientIDs[r.PatientID] = true
				if !strings.HasPrefix(r.PatientID, r.ParticipantID+"-") {
					t.Fatalf("patient id %s does not name member %s", r.PatientID, r.ParticipantID)
				}
			}
			if len(order) != persons {
				t.Fatalf("%d persons, want %d", len(order), persons)
			}
			shared := 0
			for _, m := range members {
				if len(m) > 1 {
					shared++
				}
			}
			got := float64(shared) / persons
			if got < tt.wantShared-0.02 || got > tt.wantShared+0.02 {
				t.Errorf("shared fraction %.3f, want %.2f ± 0.02", got, tt.wantShared)
			}
		})
	}
}

var (
	rePostalCode = regexp.MustCompile(`^[0-9]{5}$`)
	rePhone      = regexp.MustCompile(`^555-[2-9][0-9]{2}-[0-9]{4}$`)
	reSSN        = regexp.MustCompile(`^9[0-9]{2}-(0[1-9]|[1-9][0-9])-([0-9]{4})$`)
	reState      = regexp.MustCompile(`^[A-Z]{2}$`)
)

func TestGenerate_DemographicsValid(t *testing.T) {
	tests := []struct {
		name     string
		now      time.Time
		min, max string // birth date range, inclusive
	}{
		{"default now", time.Time{}, "1930-01-01", "2025-12-31"},
		{"other now", time.Date(2011, 6, 15, 13, 0, 0, 0, time.FixedZone("EST", -5*3600)), "1915-06-15", "2011-06-14"},
	}
	const persons = 20000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			if now.IsZero() {
				now = defaultNow
			}
			opts := Options{Seed: 21, Persons: persons, Participants: []string{"p1", "p2", "p3", "p4"}, SharedFraction: 0.5, MaxDocuments: -1, Now: tt.now}
			var truth *qhinv1.Demographics
			var person string
			ages := map[int]int{} // decade → persons
			for _, r := range collect(t, opts) {
				first := r.PersonID != person
				if first {
					person, truth = r.PersonID, r.Demographics
				}
				if err := checkDemographics(r, truth, opts.Participants); err != nil {
					t.Fatalf("%s at %s: %v", r.PersonID, r.ParticipantID, err)
				}
				bd := r.Demographics.BirthDate
				if bd < tt.min || bd > tt.max {
					t.Fatalf("%s: birth date %s outside %s..%s", r.PatientID, bd, tt.min, tt.max)
				}
				if first {
					born, _ := time.Parse(time.DateOnly, bd)
					ages[int(now.Sub(born).Hours()/24/365.25)/10]++
				}
			}
			// A census-like pyramid: every decade up to the 70s well
			// populated, the oldest thinly.
			for decade := range 8 {
				if ages[decade] < persons*5/100 {
					t.Errorf("only %d persons aged %d-%d", ages[decade], decade*10, decade*10+9)
				}
			}
			if ages[9] == 0 || ages[9] > ages[5]/3 {
				t.Errorf("%d persons in their 90s against %d in their 50s", ages[9], ages[5])
			}
		})
	}
}

// checkDemographics checks that r is complete and well formed; truth is the
// first registration of the same person.
func checkDemographics(r Registration, truth *qhinv1.Demographics, participants []string) error {
	d := r.Demographics
	if d == nil {
		return errors.New("no demographics")
	}
	for _, s := range []string{d.Given, d.Family} {
		if strings.TrimSpace(s) == "" || !utf8.ValidString(s) {
			return fmt.Errorf("bad name %q", s)
		}
	}
	if n := len(strings.Fields(d.Given)); n < 1 || n > 2 {
		return fmt.Errorf("given %q has %d names", d.Given, n)
	}
	if _, err := time.Parse(time.DateOnly, d.BirthDate); err != nil {
		return fmt.Errorf("birth date: %v", err)
	}
	if d.Gender != "male" && d.Gender != "female" {
		return fmt.Errorf("gender %q", d.Gender)
	}
	a := d.Address
	if a == nil || len(a.Lines) < 1 || len(a.Lines) > 2 || a.City == "" || a.Country != "US" {
		return fmt.Errorf("incomplete address %v", a)
	}
	for _, l := range a.Lines {
		if l == "" {
			return fmt.Errorf("empty address line in %v", a)
		}
	}
	if !reState.MatchString(a.State) || !rePostalCode.MatchString(a.PostalCode) {
		return fmt.Errorf("bad state or postal code in %v", a)
	}
	switch {
	case d.Phone == "" && r.Variations.Has(NoPhone):
	case !rePhone.MatchString(d.Phone):
		return fmt.Errorf("phone %q", d.Phone)
	}
	var mrn, ssn int
	for _, id := range d.Identifiers {
		switch id.Type {
		case "MR":
			mrn++
			if want := MRNSystem(slices.Index(participants, r.ParticipantID)); id.System != want || id.Value != r.PatientID {
				return fmt.Errorf("MRN %v, want system %s value %s", id, want, r.PatientID)
			}
		case "SS":
			ssn++
			m := reSSN.FindStringSubmatch(id.Value)
			if id.System != SSNSystem || m == nil || m[2] == "0000" {
				return fmt.Errorf("SSN %v", id)
			}
			for _, tid := range truth.Identifiers {
				if tid.Type == "SS" && tid.Value != id.Value {
					return fmt.Errorf("SSN %s, first registration has %s", id.Value, tid.Value)
				}
			}
		default:
			return fmt.Errorf("identifier of type %q", id.Type)
		}
	}
	if mrn != 1 || ssn > 1 {
		return fmt.Errorf("%d MRNs and %d SSNs", mrn, ssn)
	}
	return nil
}

func TestGenerate_VariationsMatchDifferences(t *testing.T) {
	opts := Options{Seed: 5, Persons: 30000, Participants: []string{"p1", "p2", "p3", "p4"}, SharedFraction: 0.6, MaxDocuments: -1}
	var truth *qhinv1.Demographics
	var person string
	seen := map[Variation]int{}
	later := 0
	for _, r := range collect(t, opts) {
		if r.PersonID != person {
			person, truth = r.PersonID, r.Demographics
			continue
		}
		later++
		got, err := observedVariations(truth, r.Demographics, r.Variations)
		if err != nil {
			t.Fatalf("%s: %v\ntrue: %v\ngot:  %v", r.PatientID, err, truth, r.Demographics)
		}
		if got != r.Variations {
			t.Fatalf("%s differs from the first registration by %v, reports %v\ntrue: %v\ngot:  %v", r.PatientID, got, r.Variations, truth, r.Demographics)
		}
		if got.Has(BirthDateTypo) && got&NameVariations != 0 {
			t.Fatalf("%s: birth date and name both vary: %v", r.PatientID, got)
		}
		if got == 0 {
			seen[0]++
		}
		for i := range len(variationNames) {
			if v := Variation(1 << i); got.Has(v) {
				seen[v]++
			}
		}
	}
	tests := []struct {
		v        Variation
		min, max float64 // share of registrations after the first
	}{
		{0, 0.15, 0.25},
		{FamilyTypo, 0.05, 0.25},
		{GivenTypo, 0.05, 0.25},
		{Nickname, 0.03, 0.25},
		{NoMiddleName, 0.03, 0.25},
		{MovedAddress, 0.15, 0.50},
		{NoPhone, 0.05, 0.30},
		{BirthDateTypo, 0.015, 0.045},
	}
	for _, tt := range tests {
		t.Run(tt.v.String(), func(t *testing.T) {
			share := float64(seen[tt.v]) / float64(later)
			if share < tt.min || share > tt.max {
				t.Errorf("%v in %.3f of %d later registrations, want %.3f..%.3f", tt.v, share, later, tt.min, tt.max)
			}
		})
	}
}

// observedVariations classifies how got differs from truth, independently of
// the generator, or fails if a difference is not one of the listed kinds.
// claimed only settles a given name that is both a nickname and a typo
// (Steven → Steve).
func observedVariations(truth, got *qhinv1.Demographics, claimed Variation) (Variation, error) {
	var v Variation
	tFirst, tMiddle, _ := strings.Cut(truth.Given, " ")
	gFirst, gMiddle, _ := strings.Cut(got.Given, " ")
	if gFirst != tFirst {
		nick, typo := slices.Contains(nicknames[tFirst], gFirst), isTypo(tFirst, gFirst)
		switch {
		case nick && typo && claimed.Has(GivenTypo):
			v |= GivenTypo
		case nick:
			v |= Nickname
		case typo:
			v |= GivenTypo
		default:
			return 0, fmt.Errorf("given %q is neither a nickname nor a typo of %q", gFirst, tFirst)
		}
	}
	if gMiddle != tMiddle {
		if gMiddle != "" {
			return 0, fmt.Errorf("middle name %q, true %q", gMiddle, tMiddle)
		}
		v |= NoMiddleName
	}
	if got.Family != truth.Family {
		if !isTypo(truth.Family, got.Family) {
			return 0, fmt.Errorf("family %q is not a typo of %q", got.Family, truth.Family)
		}
		v |= FamilyTypo
	}
	if got.BirthDate != truth.BirthDate {
		if !isBirthTypo(truth.BirthDate, got.BirthDate) {
			return 0, fmt.Errorf("birth date %s is not a typo of %s", got.BirthDate, truth.BirthDate)
		}
		v |= BirthDateTypo
	}
	if !proto.Equal(got.Address, truth.Address) {
		if got.Address.Lines[0] == truth.Address.Lines[0] {
			return 0, fmt.Errorf("address changed but street address kept: %v", got.Address)
		}
		v |= MovedAddress
	}
	if got.Phone != truth.Phone {
		if got.Phone != "" {
			return 0, fmt.Errorf("phone %q, true %q", got.Phone, truth.Phone)
		}
		v |= NoPhone
	}
	if got.Gender != truth.Gender {
		return 0, fmt.Errorf("gender %q, true %q", got.Gender, truth.Gender)
	}
	return v, nil
}

// isTypo reports whether b is a with two adjacent letters swapped, one letter
// dropped or one letter doubled, the first letter untouched.
func isTypo(a, b string) bool {
	ra, rb := []rune(a), []rune(b)
	if len(ra) == 0 || len(rb) == 0 || ra[0] != rb[0] || a == b {
		return false
	}
	for i := 1; i < len(ra); i++ {
		if i+1 < len(ra) {
			swapped := slices.Clone(ra)
			swapped[i], swapped[i+1] = swapped[i+1], swapped[i]
			if string(swapped) == b {
				return true
			}
		}
		if string(slices.Delete(slices.Clone(ra), i, i+1)) == b {
			return true
		}
		if string(slices.Insert(slices.Clone(ra), i, ra[i])) == b {
			return true
		}
	}
	return false
}

// isBirthTypo reports whether b is a valid date that is a with day and month
// transposed or one digit changed.
func isBirthTypo(a, b string) bool {
	if _, err := time.Parse(time.DateOnly, b); err != nil || a == b || len(a) != len(b) {
		return false
	}
	if a[:5] == b[:5] && a[5:7] == b[8:10] && a[8:10] == b[5:7] {
		return true
	}
	diff := 0
	for i := range len(a) {
		if a[i] != b[i] {
			diff++
		}
	}
	return diff == 1
}

func TestGenerate_Documents(t *testing.T) {
	tests := []struct {
		name    string
		max     int
		wantMax int
	}{
		{"none", -1, 0},
		{"default", 0, DefaultMaxDocuments},
		{"one", 1, 1},
		{"many", 6, 6},
	}
	now := time.Date(2020, 3, 1, 9, 30, 0, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{Seed: 8, Persons: 3000, Participants: three, MaxDocuments: tt.max, Now: now}
			perRegistration := map[int]int{}
			types := map[string]int{}
			ids := map[string]bool{}
			for _, r := range collect(t, opts) {
				perRegistration[len(r.Documents)]++
				born, err := time.Parse(time.DateOnly, r.Demographics.BirthDate)
				if err != nil {
					t.Fatal(err)
				}
				var last time.Time
				for k, d := range r.Documents {
					if err := checkDocument(r, d, k, born, now); err != nil {
						t.Fatalf("%s document %d: %v", r.PatientID, k, err)
					}
					if ids[d.Meta.Id] {
						t.Fatalf("document id %s used twice", d.Meta.Id)
					}
					ids[d.Meta.Id] = true
					created := d.Meta.Created.AsTime()
					if created.Before(last) {
						t.Fatalf("%s: documents not oldest first", r.PatientID)
					}
					last = created
					types[d.Meta.TypeCode+" "+d.Meta.ContentType]++
				}
			}
			for n := range tt.wantMax + 1 {
				if perRegistration[n] == 0 {
					t.Errorf("no registration with %d documents", n)
				}
			}
			for n := range perRegistration {
				if n > tt.wantMax {
					t.Errorf("%d registrations with %d documents, max %d", perRegistration[n], n, tt.wantMax)
				}
			}
			if tt.wantMax > 0 {
				for _, dt := range docTypes {
					for _, ct := range []string{ContentTypeFHIR, ContentTypeText} {
						if types[dt.code+" "+ct] == 0 {
							t.Errorf("no %s document as %s", dt.code, ct)
						}
					}
				}
			}
		})
	}
}

// checkDocument checks document k of r: complete metadata, created after birth
// and before now, content that names the patient.
func checkDocument(r Registration, d Document, k int, born, now time.Time) error {
	m := d.Meta
	if m == nil {
		return errors.New("no metadata")
	}
	if want := fmt.Sprintf("%s-doc-%d", r.PatientID, k+1); m.Id != want {
		return fmt.Errorf("id %q, want %q", m.Id, want)
	}
	if m.Patient.GetParticipantId() != r.ParticipantID || m.Patient.GetPatientId() != r.PatientID || m.SourceParticipantId != r.ParticipantID {
		return fmt.Errorf("patient %v source %q", m.Patient, m.SourceParticipantId)
	}
	i := slices.IndexFunc(docTypes, func(dt docType) bool { return dt.code == m.TypeCode })
	if i < 0 || docTypes[i].display != m.TypeDisplay || !strings.HasPrefix(m.Title, m.TypeDisplay) {
		return fmt.Errorf("type %q %q title %q", m.TypeCode, m.TypeDisplay, m.Title)
	}
	if err := m.Created.CheckValid(); err != nil {
		return err
	}
	if c := m.Created.AsTime(); !c.After(born) || !c.Before(now) || c.Before(now.AddDate(-docYears, 0, 0)) {
		return fmt.Errorf("created %v, born %v, now %v", c, born, now)
	}
	if m.Size != 0 || m.Sha256 != "" {
		return errors.New("size or hash set")
	}
	if n := len(d.Content); n < 200 || n > 8192 {
		return fmt.Errorf("%d bytes of content", n)
	}
	name := r.Demographics.Given + " " + r.Demographics.Family
	switch m.ContentType {
	case ContentTypeFHIR:
		var c struct {
			ResourceType string `json:"resourceType"`
			ID           string `json:"id"`
			Subject      struct {
				Reference string `json:"reference"`
				Display   string `json:"display"`
			} `json:"subject"`
			Date    time.Time `json:"date"`
			Section []struct {
				Entry []struct {
					Display string `json:"display"`
				} `json:"entry"`
			} `json:"section"`
		}
		if err := json.Unmarshal(d.Content, &c); err != nil {
			return fmt.Errorf("FHIR content: %v", err)
		}
		if c.ResourceType != "Composition" || c.ID != m.Id || c.Subject.Reference != "Patient/"+r.PatientID ||
			c.Subject.Display != name || !c.Date.Equal(m.Created.AsTime()) {
			return fmt.Errorf("composition does not match its metadata: %s", d.Content)
		}
		if len(c.Section) == 0 || len(c.Section[0].Entry) == 0 {
			return fmt.Errorf("composition names no condition: %s", d.Content)
		}
	case ContentTypeText:
		if !utf8.Valid(d.Content) || !strings.Contains(string(d.Content), "Patient: "+name+"\n") ||
			!strings.Contains(string(d.Content), "ICD-10-CM") {
			return fmt.Errorf("text note: %s", d.Content)
		}
	default:
		return fmt.Errorf("content type %q", m.ContentType)
	}
	return nil
}

func TestGenerate_StopsAtCallbackError(t *testing.T) {
	errStop := errors.New("stop")
	opts := Options{Seed: 2, Persons: 100, Participants: three}
	total := len(collect(t, opts))
	tests := []struct {
		name      string
		failAt    int // 1-based call that fails; 0 never
		wantCalls int
	}{
		{"first", 1, 1},
		{"second", 2, 2},
		{"middle", 57, 57},
		{"last", total, total},
		{"never", 0, total},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			err := Generate(opts, func(Registration) error {
				calls++
				if calls == tt.failAt {
					return fmt.Errorf("call %d: %w", calls, errStop)
				}
				return nil
			})
			if wantErr := tt.failAt != 0; errors.Is(err, errStop) != wantErr {
				t.Fatalf("err = %v, want stop error: %v", err, wantErr)
			}
			if calls != tt.wantCalls {
				t.Fatalf("%d calls, want %d", calls, tt.wantCalls)
			}
		})
	}
}

func TestGenerate_RejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"negative persons", Options{Persons: -1, Participants: three}},
		{"no participants", Options{Persons: 1}},
		{"empty participant", Options{Persons: 1, Participants: []string{"p1", ""}}},
		{"duplicate participant", Options{Persons: 1, Participants: []string{"p1", "p2", "p1"}}},
		{"shared above one", Options{Persons: 1, Participants: three, SharedFraction: 1.5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := false
			err := Generate(tt.opts, func(Registration) error { called = true; return nil })
			if err == nil || called {
				t.Fatalf("err = %v, called = %v; want an error before any call", err, called)
			}
		})
	}
}

func TestTypo(t *testing.T) {
	g, err := newGenerator(Options{Seed: 1, Participants: three})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		wantOK bool
	}{
		{"Robert", true},
		{"O'Connell", true},
		{"Ordóñez", true},
		{"Agustín", true},
		{"Smith-Jones", true},
		{"DuBois", true},
		{"Li", true}, // only doubling fits
		{"A", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 200 {
				got, ok := typo(g.rng, tt.name)
				if ok != tt.wantOK {
					t.Fatalf("typo(%q) = %q, %v; want ok %v", tt.name, got, ok, tt.wantOK)
				}
				if ok && (!isTypo(tt.name, got) || !utf8.ValidString(got)) {
					t.Fatalf("typo(%q) = %q: not one swap, drop or double", tt.name, got)
				}
			}
		})
	}
}

func TestBirthTypo(t *testing.T) {
	g, err := newGenerator(Options{Seed: 1, Participants: three})
	if err != nil {
		t.Fatal(err)
	}
	tests := []string{"1985-03-04", "1930-01-02", "2000-02-29", "1999-12-31", "2025-12-30", "1964-11-11"}
	for _, date := range tests {
		t.Run(date, func(t *testing.T) {
			birth, _ := time.Parse(time.DateOnly, date)
			for range 200 {
				got, ok := g.birthTypo(birth)
				if !ok {
					t.Fatalf("no typo for %s", date)
				}
				if !isBirthTypo(date, got) || got >= defaultNow.Format(time.DateOnly) {
					t.Fatalf("birthTypo(%s) = %s", date, got)
				}
			}
		})
	}
}

func TestTables(t *testing.T) {
	lists := []struct {
		name string
		list []string
		min  int
	}{
		{"female names", femaleNames, 150},
		{"male names", maleNames, 150},
		{"family names", familyNames, 250},
		{"street names", streetNames, 40},
	}
	for _, tt := range lists {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.list) < tt.min {
				t.Errorf("%d entries, want at least %d", len(tt.list), tt.min)
			}
			seen := map[string]bool{}
			for _, s := range tt.list {
				if seen[s] || strings.TrimSpace(s) != s || s == "" {
					t.Errorf("duplicate or blank entry %q", s)
				}
				seen[s] = true
			}
		})
	}
	t.Run("places", func(t *testing.T) {
		if len(places) < 60 {
			t.Errorf("%d places, want at least 60", len(places))
		}
		seen := map[place]bool{}
		for _, p := range places {
			if seen[p] || p.city == "" || !reState.MatchString(p.state) || !regexp.MustCompile(`^[0-9]{3}$`).MatchString(p.zip3) {
				t.Errorf("bad or duplicate place %v", p)
			}
			seen[p] = true
		}
	})
	t.Run("nicknames", func(t *testing.T) {
		for _, given := range slices.Concat(femaleNames, maleNames) {
			for _, nick := range nicknames[given] {
				if nick == given || nick == "" {
					t.Errorf("nickname %q of %q", nick, given)
				}
			}
		}
	})
}

func TestSSN_Unique(t *testing.T) {
	g, err := newGenerator(Options{Seed: 4, Participants: three})
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]bool, 300000)
	for i := range 300000 {
		s := g.ssn(i)
		if m := reSSN.FindStringSubmatch(s); m == nil || m[2] == "0000" {
			t.Fatalf("ssn(%d) = %q", i, s)
		}
		if seen[s] {
			t.Fatalf("ssn(%d) = %s repeats", i, s)
		}
		seen[s] = true
	}
}

func TestVariation_String(t *testing.T) {
	tests := []struct {
		v    Variation
		want string
	}{
		{0, "none"},
		{FamilyTypo, "family-typo"},
		{Nickname | MovedAddress | NoPhone, "nickname+moved-address+no-phone"},
		{BirthDateTypo, "birth-date-typo"},
		{1 << 7, "unknown"},
	}
	for _, tt := range tests {
		if got := tt.v.String(); got != tt.want {
			t.Errorf("Variation(%d).String() = %q, want %q", tt.v, got, tt.want)
		}
	}
}

func BenchmarkGenerate(b *testing.B) {
	benchmarks := []struct {
		name string
		docs int
	}{
		{"NoDocuments", -1},
		{"Documents", DefaultMaxDocuments},
	}
	for _, bb := range benchmarks {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			regs := 0
			// One op is one person.
			err := Generate(Options{Seed: 1, Persons: b.N, Participants: three, MaxDocuments: bb.docs}, func(Registration) error {
				regs++
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(regs)/float64(b.N), "registrations/op")
		})
	}
}
