package match

import (
	"encoding/csv"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// testDataDir returns the shared test data directory (outside the
// repository; see its README), or skips the test when it is absent, as it
// is in a user's clone. OPENQHIN_TESTDATA overrides the default
// ../shared/data next to the repository.
func testDataDir(t testing.TB, sub string) string {
	t.Helper()
	dir := os.Getenv("OPENQHIN_TESTDATA")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared", "data")
	}
	dir = filepath.Join(dir, sub)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		t.Skipf("test data %s not present", dir)
	} else if err != nil {
		t.Fatal(err)
	}
	return dir
}

// febrlRecord is one row of a FEBRL dataset.
type febrlRecord struct {
	id     string // rec-12-org, rec-12-dup-0, ...
	person string // rec-12
	demo   *qhinv1.Demographics
}

// readFEBRL reads a FEBRL dataset into demographics.
func readFEBRL(t testing.TB, path string) []febrlRecord {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cr := csv.NewReader(f)
	cr.TrimLeadingSpace = true
	rows, err := cr.ReadAll()
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if len(rows) < 2 {
		t.Fatalf("%s: no records", path)
	}
	col := make(map[string]int)
	for i, name := range rows[0] {
		col[strings.TrimSpace(name)] = i
	}
	for _, name := range []string{"rec_id", "given_name", "surname", "street_number", "address_1",
		"address_2", "suburb", "postcode", "state", "date_of_birth"} {
		if _, ok := col[name]; !ok {
			t.Fatalf("%s: no column %s", path, name)
		}
	}
	var out []febrlRecord
	for _, row := range rows[1:] {
		get := func(name string) string { return strings.TrimSpace(row[col[name]]) }
		id := get("rec_id")
		person := id
		if i := strings.Index(id, "-org"); i >= 0 {
			person = id[:i]
		} else if i := strings.Index(id, "-dup-"); i >= 0 {
			person = id[:i]
		}
		dob := get("date_of_birth")
		if len(dob) == 8 {
			dob = dob[:4] + "-" + dob[4:6] + "-" + dob[6:]
		}
		out = append(out, febrlRecord{id: id, person: person, demo: &qhinv1.Demographics{
			Given:     get("given_name"),
			Family:    get("surname"),
			BirthDate: dob,
			Address: &qhinv1.Address{
				Lines:      []string{strings.TrimSpace(get("street_number") + " " + get("address_1")), get("address_2")},
				City:       get("suburb"),
				State:      get("state"),
				PostalCode: get("postcode"),
				Country:    "AU",
			},
		}})
	}
	return out
}

// linkage is the outcome of searching every record of a dataset against an
// index of all of them.
type linkage struct {
	truePairs, foundPairs, correct int
}

func (l linkage) precision() float64 { return float64(l.correct) / float64(max(l.foundPairs, 1)) }
func (l linkage) recall() float64    { return float64(l.correct) / float64(max(l.truePairs, 1)) }

// linkFEBRL indexes recs, searches each of them at threshold and counts the
// unordered pairs of distinct records found, against the ground truth.
func linkFEBRL(recs []febrlRecord, threshold float64) linkage {
	idx := NewIndex()
	norm := make([]Record, len(recs))
	person := make(map[string]string, len(recs))
	size := make(map[string]int)
	for i, r := range recs {
		norm[i] = Normalize(r.demo)
		idx.Add(r.id, norm[i])
		person[r.id] = r.person
		size[r.person]++
	}
	var l linkage
	for _, n := range size {
		l.truePairs += n * (n - 1) / 2
	}
	found := make(map[[2]string]bool)
	for i, r := range recs {
		for _, res := range idx.Search(norm[i], threshold, 0) {
			if res.ID == r.id {
				continue
			}
			p := [2]string{min(r.id, res.ID), max(r.id, res.ID)}
			if found[p] {
				continue
			}
			found[p] = true
			l.foundPairs++
			if person[p[0]] == person[p[1]] {
				l.correct++
			}
		}
	}
	return l
}

// TestSearch_FEBRLPrecisionRecall measures pair precision and recall of
// Index.Search at DefaultThreshold on the FEBRL benchmark datasets, whose
// duplicates carry typos, swapped and missing fields and nicknames. The
// floors are what this matcher achieved when written, minus a margin: a
// change that lowers them made matching worse.
func TestSearch_FEBRLPrecisionRecall(t *testing.T) {
	dir := testDataDir(t, "febrl")
	for _, tc := range []struct {
		file                    string
		minPrecision, minRecall float64
	}{
		// Observed when written: precision 1.000 on all three; recall
		// 0.776, 0.673 and 0.649. Most missed pairs are duplicates whose
		// given or family name FEBRL replaced by another name while the
		// rest agrees, which Score treats as a relative (twins rule), or
		// whose birth dates are years apart.
		{"dataset1.csv", 0.97, 0.74},
		{"dataset2.csv", 0.97, 0.64},
		{"dataset3.csv", 0.97, 0.62},
	} {
		t.Run(tc.file, func(t *testing.T) {
			recs := readFEBRL(t, filepath.Join(dir, tc.file))
			l := linkFEBRL(recs, DefaultThreshold)
			t.Logf("%s: %d records, %d true pairs, %d found, %d correct: precision %.3f recall %.3f",
				tc.file, len(recs), l.truePairs, l.foundPairs, l.correct, l.precision(), l.recall())
			if l.precision() < tc.minPrecision {
				t.Errorf("precision %.3f, want >= %.2f", l.precision(), tc.minPrecision)
			}
			if l.recall() < tc.minRecall {
				t.Errorf("recall %.3f, want >= %.2f", l.recall(), tc.minRecall)
			}
		})
	}
}
