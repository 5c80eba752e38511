package fhir

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// syntheaDir holds the shared Synthea sample, outside the repository. Users'
// clones do not have it; the test skips then.
const syntheaDir = "../../../shared/data/synthea"

var patientResourceType = regexp.MustCompile(`"resourceType"\s*:\s*"Patient"`)

func TestImportDir_SyntheaSample(t *testing.T) {
	if _, err := os.Stat(syntheaDir); err != nil {
		t.Skipf("no Synthea sample at %s", syntheaDir)
	}
	if testing.Short() {
		t.Skip("imports the whole Synthea sample")
	}
	// Count independently: a file holds a patient when its text names the
	// resource type.
	paths, err := filepath.Glob(filepath.Join(syntheaDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	withPatient := map[string]bool{}
	var bundleBytes int64
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if patientResourceType.Match(data) {
			withPatient[p] = true
			bundleBytes += int64(len(data))
		}
	}
	if len(withPatient) == 0 {
		t.Fatalf("no bundle of %d holds a Patient", len(paths))
	}

	s := openStore(t)
	im := &Importer{Sink: s, ParticipantID: participantID}
	start := time.Now()
	res, err := im.ImportDir(context.Background(), syntheaDir, nil)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("imported %d files (%d patients, %d documents, %d skipped) in %v",
		res.Files, res.Patients, res.Documents, len(res.Skipped), elapsed)

	if res.Files != len(paths) || res.Patients != len(withPatient) || res.Documents != len(withPatient) {
		t.Errorf("result %d files, %d patients, %d documents; want %d, %d, %d",
			res.Files, res.Patients, res.Documents, len(paths), len(withPatient), len(withPatient))
	}
	if want := len(paths) - len(withPatient); len(res.Skipped) != want {
		t.Errorf("%d skipped, want %d", len(res.Skipped), want)
	}
	for _, sk := range res.Skipped {
		if withPatient[sk.File] || sk.Reason != ErrNoPatient.Error() {
			t.Errorf("skipped %s: %s; want only files without a Patient, for that reason", filepath.Base(sk.File), sk.Reason)
		}
	}

	// Every patient has exactly its bundle document, and the documents
	// together are the bundles that hold a patient.
	patients, documents, err := s.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if patients != len(withPatient) || documents != len(withPatient) {
		t.Errorf("store holds %d patients, %d documents; want %d each", patients, documents, len(withPatient))
	}
	var stored int64
	err = s.ForEachPatient(func(p storePatient) error {
		docs, err := s.Documents([]string{p.ID}, storeFilterAll)
		if err != nil {
			return err
		}
		if len(docs) != 1 || docs[0].Id != "bundle-"+p.ID || docs[0].GetCreated().AsTime().Equal(unknownTime) {
			t.Errorf("patient %s: documents %v, want its bundle with a creation time", p.ID, docs)
		}
		for _, d := range docs {
			stored += d.Size
		}
		if p.Demographics.GetFamily() == "" || p.Demographics.GetBirthDate() == "" {
			t.Errorf("patient %s: family name or birth date missing", p.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if stored != bundleBytes {
		t.Errorf("documents hold %d bytes, the bundles %d", stored, bundleBytes)
	}
}
