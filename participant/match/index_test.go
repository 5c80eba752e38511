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
		"moved":   with(func(d *qhinv1.Demographics) { d.Address.PostalCode = "94110" }),
		"typo":    with(func(d *qhinv1.Demographics) { d.BirthDate = "1980-04-13" }),
		"nick":    with(func(d *qhinv1.Demographics) { d.Given = "Bob" }),
		"sibling": with(func(d *qhinv1.Demographics) { d.Given = "Charles"; d.BirthDate = "1980-07-30" }),
		"twin":    with(func(d *qhinv1.Demographics) { d.Given = "Edward" }),
	}
	for id, d := range variants {
		x.Add(id, Normalize(d))
	}

	all := x.Search(q, 0, 0)
	if len(all) != len(variants) {
		t.Fatalf("Search(threshold 0) = %v, want all %d records (every one shares a block)", all, len(variants))
	}
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
	// "exact" and "nick" both score 1: the tie is broken by id.
	if all[0].ID != "exact" || all[1].ID != "nick" || all[0].Score != 1 || all[1].Score != 1 {
		t.Errorf("first results = %v, want exact then nick at 1", all[:2])
	}

	got := x.Search(q, DefaultThreshold, 0)
	var ids []string
	for _, r := range got {
		if r.Score < DefaultThreshold {
			t.Errorf("result %v below threshold", r)
		}
		ids = append(ids, r.ID)
	}
	if want := []string{"exact", "nick", "typo", "moved"}; !slices.Equal(ids, want) {
		t.Errorf("Search(DefaultThreshold) ids = %v, want %v", ids, want)
	}

	if got := x.Search(q, DefaultThreshold, 2); len(got) != 2 || got[0].ID != "exact" || got[1].ID != "nick" {
		t.Errorf("Search(limit 2) = %v, want exact and nick", got)
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
		found := slices.ContainsFunc(x.Search(r, 0.999, 0), func(res Result) bool { return res.ID == id })
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
