package match

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

var (
	synthGiven = []string{
		"james", "john", "robert", "michael", "william", "david", "richard", "joseph", "thomas", "charles",
		"mary", "patricia", "jennifer", "linda", "elizabeth", "barbara", "susan", "jessica", "sarah", "karen",
		"jose", "maria", "juan", "carmen", "luis", "ana", "carlos", "lucia", "miguel", "sofia",
		"wei", "li", "ngoc", "anh", "hiroshi", "yuki", "olga", "ivan", "fatima", "mohammed",
	}
	synthSyllables = []string{
		"ab", "bar", "cor", "dal", "el", "fer", "gar", "han", "is", "jor", "kel", "lin", "mor", "nor",
		"ol", "par", "quin", "ros", "sol", "tan", "ur", "val", "wen", "xi", "yor", "zan", "ber", "mac", "son", "ton",
	}
)

// synthRecords returns n random normalized records from a fixed seed: given
// names from a short list, family names of two or three syllables
// (about 27,000 of them), birth dates over 90 years, five-digit postal codes
// and ten-digit phones.
func synthRecords(n int, seed uint64) []Record {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	recs := make([]Record, n)
	for i := range recs {
		var fam strings.Builder
		for range 2 + rng.IntN(2) {
			fam.WriteString(synthSyllables[rng.IntN(len(synthSyllables))])
		}
		g := rng.IntN(len(synthGiven))
		gender := "male"
		if (g/10)%2 == 1 || g%2 == 1 && g >= 20 {
			gender = "female"
		}
		recs[i] = Record{
			Given:      []string{synthGiven[g]},
			Family:     fam.String(),
			BirthYear:  1930 + rng.IntN(90),
			BirthMonth: 1 + rng.IntN(12),
			BirthDay:   1 + rng.IntN(28),
			Gender:     gender,
			PostalCode: fmt.Sprintf("%05d", rng.IntN(100000)),
			Phone:      fmt.Sprintf("%010d", rng.Int64N(1e10)),
		}
	}
	return recs
}

// fillIndex adds recs to a new index as "p0", "p1", ...
func fillIndex(recs []Record) *Index {
	x := NewIndex()
	for i, r := range recs {
		x.Add(fmt.Sprintf("p%d", i), r)
	}
	return x
}

func TestIndex_SearchFindsPersonDespiteOneError(t *testing.T) {
	x := fillIndex(synthRecords(20000, 1))
	target := Normalize(demo("Elizabeth Ann", "O'Connell", "1980-04-12", "female", "02139", "617-555-0123"))
	x.Add("target", target)
	for _, tc := range []struct {
		name string
		edit func(d *qhinv1.Demographics)
	}{
		{"Exact", func(d *qhinv1.Demographics) {}},
		{"TypoInFamilyName", func(d *qhinv1.Demographics) { d.Family = "O'Conel" }},
		{"TypoInFirstLetterOfFamilyName", func(d *qhinv1.Demographics) { d.Family = "P'Connell" }},
		{"Nickname", func(d *qhinv1.Demographics) { d.Given = "Liz" }},
		{"TypoInGivenName", func(d *qhinv1.Demographics) { d.Given = "Elisabet" }},
		{"TypoInBirthDay", func(d *qhinv1.Demographics) { d.BirthDate = "1980-04-13" }},
		{"TypoInBirthYear", func(d *qhinv1.Demographics) { d.BirthDate = "1981-04-12" }},
		{"DayAndMonthSwapped", func(d *qhinv1.Demographics) { d.BirthDate = "1980-12-04" }},
		{"Moved", func(d *qhinv1.Demographics) { d.Address.PostalCode = "94110"; d.Phone = "" }},
		{"NamesSwapped", func(d *qhinv1.Demographics) { d.Given, d.Family = "O'Connell", "Elizabeth" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := demo("Elizabeth Ann", "O'Connell", "1980-04-12", "female", "02139", "617-555-0123")
			tc.edit(d)
			res := x.Search(Normalize(d), DefaultThreshold, 5)
			if len(res) == 0 || res[0].ID != "target" {
				t.Fatalf("Search = %v, want target first", res)
			}
		})
	}
}

func TestIndex_SearchRespectsThresholdLimitAndOrder(t *testing.T) {
	x := NewIndex()
	q := Normalize(robert())
	variants := map[string]*qhinv1.Demographics{
		"exact":   robert(),
		"moved":   with(func(d *qhinv1.Demographics) { d.Address.PostalCode = "94110"; d.Phone = "" }),
		"typo":    with(func(d *qhinv1.Demographics) { d.BirthDate = "1980-04-13" }),
		"nick":    with(func(d *qhinv1.Demographics) { d.Given = "Bob" }),
		"sibling": with(func(d *qhinv1.Demographics) { d.Given = "Charles"; d.BirthDate = "1983-07-30"; d.Phone = "" }),
		"other":   demo("Maria", "Garcia", "1980-04-12", "female", "90001", ""),
	}
	for id, d := range variants {
		x.Add(id, Normalize(d))
	}

	all := x.Search(q, 1e-300, 0)
	if !slices.IsSortedFunc(all, func(a, b Result) int {
		if a.Score != b.Score {
			if a.Score > b.Score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	}) {
		t.Errorf("results not sorted by score then id: %v", all)
	}
	if len(all) == 0 || all[0].ID != "exact" || all[0].Pair.Decision != Match {
		t.Fatalf("first result = %v, want exact, a match", all)
	}
	for _, r := range all {
		if r.Score != r.Pair.Score() || r.Score <= 0 {
			t.Errorf("result %s: score %v, pair score %v", r.ID, r.Score, r.Pair.Score())
		}
	}

	got := x.Search(q, DefaultThreshold, 0)
	var ids []string
	for _, r := range got {
		if r.Score < DefaultThreshold {
			t.Errorf("result %v below threshold", r)
		}
		ids = append(ids, r.ID)
	}
	slices.Sort(ids)
	if want := []string{"exact", "moved", "nick", "typo"}; !slices.Equal(ids, want) {
		t.Errorf("Search(DefaultThreshold) ids = %v, want %v", ids, want)
	}

	if got := x.Search(q, DefaultThreshold, 2); len(got) != 2 || got[0].ID != "exact" {
		t.Errorf("Search(limit 2) = %v, want exact first of 2", got)
	}
	if got := x.Search(Record{}, 0, 0); len(got) != 0 {
		t.Errorf("Search(empty record) = %v, want nothing", got)
	}
}

func TestIndex_AddReplacesAndRemoveForgets(t *testing.T) {
	x := NewIndex()
	a := Normalize(robert())
	b := Normalize(demo("Maria", "Garcia", "1975-01-30", "female", "90001", ""))
	x.Add("p1", a)
	x.Add("p2", b)
	if x.Len() != 2 {
		t.Fatalf("Len = %d, want 2", x.Len())
	}

	x.Add("p1", b) // p1 now holds Maria's record
	if x.Len() != 2 {
		t.Errorf("Len after replace = %d, want 2", x.Len())
	}
	if got := x.Search(a, DefaultThreshold, 0); len(got) != 0 {
		t.Errorf("Search(old record of p1) = %v, want nothing", got)
	}
	if got := x.Search(b, DefaultThreshold, 0); len(got) != 2 {
		t.Errorf("Search(new record of p1) = %v, want p1 and p2", got)
	}

	x.Remove("p2")
	x.Remove("p2")      // twice is harmless
	x.Remove("missing") // so is an unknown id
	if x.Len() != 1 {
		t.Errorf("Len after remove = %d, want 1", x.Len())
	}
	if got := x.Search(b, DefaultThreshold, 0); len(got) != 1 || got[0].ID != "p1" {
		t.Errorf("Search after remove = %v, want p1 only", got)
	}

	x.Add("p3", a) // reuses p2's slot
	if got := x.Search(a, DefaultThreshold, 0); len(got) != 1 || got[0].ID != "p3" {
		t.Errorf("Search(a) = %v, want p3", got)
	}

	x.Remove("p1")
	x.Remove("p3")
	if x.Len() != 0 || len(x.blocks) != 0 {
		t.Errorf("after removing everything: Len %d, %d blocks left, want none", x.Len(), len(x.blocks))
	}
}

func TestIndex_RemoveKeepsOtherPatientsInSharedBlocks(t *testing.T) {
	recs := synthRecords(3000, 2)
	x := fillIndex(recs)
	for i := 0; i < len(recs); i += 2 {
		x.Remove(fmt.Sprintf("p%d", i))
	}
	if x.Len() != len(recs)/2 {
		t.Fatalf("Len = %d, want %d", x.Len(), len(recs)/2)
	}
	for i, r := range recs {
		id := fmt.Sprintf("p%d", i)
		found := slices.ContainsFunc(x.Search(r, DefaultThreshold, 0), func(res Result) bool { return res.ID == id })
		if found != (i%2 == 1) {
			t.Fatalf("%s found = %v after removing even ids", id, found)
		}
	}
	// Every block holds only live slots, once.
	for k, b := range x.blocks {
		seen := make(map[uint32]bool)
		for _, slot := range b {
			if x.ids[slot] == "" || seen[slot] {
				t.Fatalf("block %x holds free or repeated slot %d", k, slot)
			}
			seen[slot] = true
		}
	}
}

func TestIndex_ConcurrentSearchAddRemove(t *testing.T) {
	recs := synthRecords(4000, 3)
	x := fillIndex(recs[:2000])
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < 2000; i += 4 {
				id := fmt.Sprintf("p%d", 2000+i)
				x.Add(id, recs[2000+i])
				if i%3 == 0 {
					x.Remove(id)
				}
			}
		})
		wg.Go(func() {
			for i := w; i < 2000; i += 4 {
				for _, res := range x.Search(recs[i], DefaultThreshold, 3) {
					if res.Score < DefaultThreshold {
						t.Errorf("result %v below threshold", res)
					}
				}
				_ = x.Len()
			}
		})
	}
	wg.Wait()
	want := 2000
	for i := range 2000 {
		if i%3 != 0 {
			want++
		}
	}
	if x.Len() != want {
		t.Errorf("Len = %d, want %d", x.Len(), want)
	}
}

func TestSoundex(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"robert", "R163"}, {"rupert", "R163"}, {"rubin", "R150"}, {"ashcraft", "A261"},
		{"tymczak", "T522"}, {"pfister", "P236"}, {"honeyman", "H555"}, {"smith", "S530"},
		{"smyth", "S530"}, {"lee", "L000"}, {"oconnell", "O254"}, {"van der berg", "V536"},
		{"李", "~李"}, {"ольга", "~оль"},
	} {
		if got := string(appendSoundex(nil, tc.name)); got != tc.want {
			t.Errorf("soundex(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestIndex_BlockingSurvivesMissingBirthDateAndSurnameTypo finds a record
// whose birth date is missing and whose family name has a typo that changes
// its Soundex code, by the place keys.
func TestIndex_BlockingSurvivesMissingBirthDateAndSurnameTypo(t *testing.T) {
	x := fillIndex(synthRecords(5000, 9))
	x.Add("target", Normalize(demo("Elizabeth", "Knight", "1980-04-12", "female", "02139", "")))
	q := Normalize(demo("Elizabeth", "Night", "", "female", "02139", ""))
	if sound := func(s string) string { return string(appendSoundex(nil, s)) }; sound("knight") == sound("night") {
		t.Fatal("the test needs a typo that changes the Soundex code")
	}
	p := prepare(q)
	var found bool
	x.mu.RLock()
	for _, k := range blockKeys(&p, nil) {
		for _, slot := range x.blocks[k] {
			found = found || x.ids[slot] == "target"
		}
	}
	x.mu.RUnlock()
	if !found {
		t.Error("no blocking key of the query leads to the target")
	}
}

// TestIndex_MarriedNameIsFound finds a woman whose family name changed by
// marriage, everything else agreeing, among other patients.
func TestIndex_MarriedNameIsFound(t *testing.T) {
	x := fillIndex(synthRecords(5000, 10))
	x.Add("target", Normalize(demo("Maria Elena", "Garcia", "1975-01-30", "female", "02139", "617-555-0199")))
	res := x.Search(Normalize(demo("Maria Elena", "Whitaker", "1975-01-30", "female", "02139", "617-555-0199")), DefaultThreshold, 5)
	if len(res) == 0 || res[0].ID != "target" || res[0].Pair.Decision != Match {
		t.Fatalf("Search = %+v, want target first, as a match", res)
	}
}

// TestIndex_EllenIsFoundFromBothRegistrations indexes Ellen's two
// registrations at two members and checks that a query finds each, and
// that the two registrations are one person to the broker's merge.
func TestIndex_EllenIsFoundFromBothRegistrations(t *testing.T) {
	p1, p2 := fillIndex(synthRecords(2000, 11)), fillIndex(synthRecords(2000, 12))
	p1.Add("ellen-p1", Normalize(ellenP1()))
	p2.Add("ellen-p2", Normalize(ellenP2()))
	q := Normalize(&qhinv1.Demographics{Given: "Ellen", Family: "Vasquez-Whitford", BirthDate: "1958-11-23", Gender: "female"})
	for _, c := range []struct {
		x  *Index
		id string
	}{{p1, "ellen-p1"}, {p2, "ellen-p2"}} {
		res := c.x.Search(q, DefaultThreshold, 10)
		if len(res) == 0 || res[0].ID != c.id {
			t.Errorf("Search = %+v, want %s first", res, c.id)
		}
	}
	if !SamePerson(Normalize(ellenP1()), Normalize(ellenP2())) {
		t.Error("SamePerson(Ellen at p1, Ellen at p2) = false: the broker would show two persons")
	}
}

// TestIndex_TrainOnOwnRecords retrains an index's model on its own records:
// without duplicates EM finds too few matches, so m stays the default's
// and u is the member's own.
func TestIndex_TrainOnOwnRecords(t *testing.T) {
	x := fillIndex(synthRecords(5000, 13))
	rep, err := x.Train(t.Context(), TrainOptions{RandomPairs: 200_000})
	if err != nil {
		t.Fatal(err)
	}
	m := x.Model()
	if m == DefaultModel() {
		t.Fatal("model unchanged after Train")
	}
	for _, r := range rep.Rules {
		if r.Used {
			t.Errorf("rule %s used with %.0f matches in records without duplicates", r.Rule, r.Matches)
		}
	}
	dm, tm := DefaultModel().Params(), m.Params()
	if tm.Prior != dm.Prior {
		t.Errorf("prior %v changed, want the default's %v", tm.Prior, dm.Prior)
	}
	for f := range NumFields {
		for l := range tm.Fields[f].Levels {
			if tm.Fields[f].Levels[l].M != dm.Fields[f].Levels[l].M {
				t.Errorf("%s/%s: m %v, want the default's %v", f, Levels(f)[l], tm.Fields[f].Levels[l].M, dm.Fields[f].Levels[l].M)
			}
		}
	}
	// synthRecords draws postal codes from 100,000: u of an exact match is
	// about 1e-5, far from the default model's.
	if u := tm.Fields[FieldPostalCode].Levels[0].U; u > 1e-3 {
		t.Errorf("u of postal code exact = %v, want the member's own (about 1e-5, clamped to 1e-4)", u)
	}
}
