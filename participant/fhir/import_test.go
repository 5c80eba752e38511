package fhir

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func TestImportBundle_MapsPatientFieldByField(t *testing.T) {
	s := openStore(t)
	im := &Importer{Sink: s, ParticipantID: participantID}
	path := writeFile(t, t.TempDir(), "José_O'Connell.json", marshal(t, fixtureBundle()))
	res, err := im.ImportFiles(context.Background(), []string{path}, nil)
	if err != nil || len(res.Skipped) > 0 {
		t.Fatalf("import: %v, skipped %v", err, res.Skipped)
	}
	d, err := s.Patient(fixturePatientID)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		field     string
		got, want any
	}{
		{"given (official, digits stripped)", d.Given, "José María"},
		{"family (official, digits stripped)", d.Family, "O'Connell"},
		{"birth date", d.BirthDate, "1987-03-14"},
		{"gender", d.Gender, "male"},
		{"address lines (first address)", d.GetAddress().GetLines(), []string{"12 Rue d'Été", "Apt 3"}},
		{"city", d.GetAddress().GetCity(), "Springfield"},
		{"state", d.GetAddress().GetState(), "Massachusetts"},
		{"postal code", d.GetAddress().GetPostalCode(), "01103"},
		{"country", d.GetAddress().GetCountry(), "US"},
		{"phone (first phone, not email)", d.Phone, "555-201-7788"},
		{"identifier count", len(d.Identifiers), 3},
	} {
		if !equalAny(c.got, c.want) {
			t.Errorf("%s = %q, want %q", c.field, c.got, c.want)
		}
	}
	wantIDs := []*qhinv1.Identifier{
		{System: "https://github.com/synthetichealth/synthea", Value: "synthea-0001"},
		{System: "http://hospital.smarthealthit.org", Value: "MRN-778812", Type: "MR"},
		{System: "http://hl7.org/fhir/sid/us-ssn", Value: "999-12-3456", Type: "SS"},
	}
	for i, want := range wantIDs {
		if i >= len(d.Identifiers) || !proto.Equal(d.Identifiers[i], want) {
			t.Errorf("identifier %d = %v, want %v", i, d.Identifiers[min(i, len(d.Identifiers)-1)], want)
		}
	}
}

func equalAny(a, b any) bool {
	as, aok := a.([]string)
	bs, bok := b.([]string)
	if aok && bok {
		return slices.Equal(as, bs)
	}
	return a == b
}

func TestImportBundle_WritesDocumentsWithContent(t *testing.T) {
	s := openStore(t)
	im := &Importer{Sink: s, ParticipantID: participantID}
	raw := marshal(t, fixtureBundle())
	path := writeFile(t, t.TempDir(), "bundle.json", raw)

	res, err := im.ImportFiles(context.Background(), []string{path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Result{Files: 1, Patients: 1, Documents: 3}); res.Files != want.Files || res.Patients != want.Patients || res.Documents != want.Documents || len(res.Skipped) != 0 {
		t.Fatalf("result = %+v, want %+v", res, want)
	}

	want := []struct {
		id, typeCode, typeDisplay, title, contentType string
		created                                       time.Time
		content                                       []byte
	}{
		{"docref-inline", "34117-2", "History and physical note", "Admission H&P", "text/plain",
			time.Date(2019, 5, 2, 11, 0, 0, 0, time.UTC), inlineContent},
		// Title from type.text; content type from the Binary.
		{"docref-binary", "11506-3", "Progress note", "Progress note (text)", "text/html",
			time.Date(2019, 5, 3, 10, 0, 0, 0, time.UTC), binaryContent},
		// Created is the latest time among the resources: Observation.issued.
		{"bundle-" + fixturePatientID, "60591-5", "Patient summary Document", "FHIR bundle (7 resources)", "application/fhir+json",
			time.Date(2019, 6, 10, 12, 0, 0, 250e6, time.UTC), raw},
	}
	docs, err := s.Documents([]string{fixturePatientID}, storeFilterAll)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != len(want) {
		t.Fatalf("store holds %d documents of the patient, want %d", len(docs), len(want))
	}
	for _, w := range want {
		m, err := s.Document(w.id)
		if err != nil {
			t.Errorf("document %s: %v", w.id, err)
			continue
		}
		sum := sha256.Sum256(w.content)
		for _, c := range []struct{ field, got, want string }{
			{"type code", m.TypeCode, w.typeCode},
			{"type display", m.TypeDisplay, w.typeDisplay},
			{"title", m.Title, w.title},
			{"content type", m.ContentType, w.contentType},
			{"created", m.GetCreated().AsTime().Format(time.RFC3339Nano), w.created.Format(time.RFC3339Nano)},
			{"patient", m.GetPatient().GetPatientId(), fixturePatientID},
			{"patient participant", m.GetPatient().GetParticipantId(), participantID},
			{"source participant", m.SourceParticipantId, participantID},
			{"sha256", m.Sha256, hex.EncodeToString(sum[:])},
		} {
			if c.got != c.want {
				t.Errorf("document %s: %s = %q, want %q", w.id, c.field, c.got, c.want)
			}
		}
		if m.Size != int64(len(w.content)) {
			t.Errorf("document %s: size = %d, want %d", w.id, m.Size, len(w.content))
		}
		if got := readContent(t, s, w.id); !bytes.Equal(got, w.content) {
			t.Errorf("document %s: content = %q, want %q", w.id, got, w.content)
		}
	}
}

func TestImportBundle_ReimportIsIdempotent(t *testing.T) {
	s := openStore(t)
	im := &Importer{Sink: s, ParticipantID: participantID}
	path := writeFile(t, t.TempDir(), "bundle.json", marshal(t, fixtureBundle()))
	ctx := context.Background()

	snapshot := func() (*qhinv1.Demographics, []*qhinv1.DocumentMetadata) {
		d, err := s.Patient(fixturePatientID)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := s.Documents([]string{fixturePatientID}, storeFilterAll)
		if err != nil {
			t.Fatal(err)
		}
		return d, docs
	}
	if _, err := im.ImportFiles(ctx, []string{path}, nil); err != nil {
		t.Fatal(err)
	}
	d1, docs1 := snapshot()
	if _, err := im.ImportFiles(ctx, []string{path}, nil); err != nil {
		t.Fatal(err)
	}
	d2, docs2 := snapshot()
	patients, documents, err := s.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if patients != 1 || documents != 3 {
		t.Errorf("after two imports the store holds %d patients, %d documents; want 1, 3", patients, documents)
	}
	if !proto.Equal(d1, d2) {
		t.Errorf("demographics changed on re-import:\n%v\n%v", d1, d2)
	}
	if len(docs1) != len(docs2) {
		t.Fatalf("documents %d then %d", len(docs1), len(docs2))
	}
	for i := range docs1 {
		if !proto.Equal(docs1[i], docs2[i]) {
			t.Errorf("document changed on re-import:\n%v\n%v", docs1[i], docs2[i])
		}
	}
}

func TestImportBundle_BinaryReferenceForms(t *testing.T) {
	for _, c := range []struct{ name, url, fullURL string }{
		{"fullUrl urn:uuid", fixtureBinaryURL, fixtureBinaryURL},
		{"relative Binary/id", "Binary/bin-1", fixtureBinaryURL},
		{"absolute with history", "http://example.org/fhir/Binary/bin-1/_history/2", fixtureBinaryURL},
		{"absolute fullUrl", "http://example.org/fhir/Binary/bin-1", "http://example.org/fhir/Binary/bin-1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := fixtureBundle()
			entryOf(t, b, "DocumentReference", 1)["content"].([]any)[0].(obj)["attachment"].(obj)["url"] = c.url
			for _, e := range b["entry"].([]any) {
				if e.(obj)["resource"].(obj)["resourceType"] == "Binary" {
					e.(obj)["fullUrl"] = c.fullURL
				}
			}
			sink := newMemSink()
			im := &Importer{Sink: sink, ParticipantID: participantID}
			if _, err := im.ImportBundle(context.Background(), bytes.NewReader(marshal(t, b)), "b.json"); err != nil {
				t.Fatal(err)
			}
			if m := sink.docs["docref-binary"]; m == nil || m.Size != int64(len(binaryContent)) {
				t.Errorf("docref-binary = %v, want %d bytes", m, len(binaryContent))
			}
		})
	}
}

func TestImportBundle_PatientIDFromFullURL(t *testing.T) {
	b := fixtureBundle()
	delete(entryOf(t, b, "Patient", 0), "id")
	sink := newMemSink()
	im := &Importer{Sink: sink, ParticipantID: participantID}
	// The DocumentReference that says Patient/<id> cannot resolve without the
	// id; the one that uses the fullUrl can.
	entryOf(t, b, "DocumentReference", 1)["subject"] = obj{"reference": "urn:uuid:" + fixturePatientID}
	if _, err := im.ImportBundle(context.Background(), bytes.NewReader(marshal(t, b)), "b.json"); err != nil {
		t.Fatal(err)
	}
	if sink.patients[fixturePatientID] == nil {
		t.Errorf("patients = %v, want the id of the fullUrl", keys(sink.patients))
	}
	if m := sink.docs["docref-binary"]; m.GetPatient().GetPatientId() != fixturePatientID {
		t.Errorf("docref-binary patient = %q", m.GetPatient().GetPatientId())
	}
}

func TestImportBundle_SeveralPatients(t *testing.T) {
	const second = "second-patient"
	b := fixtureBundle()
	b["entry"] = append(b["entry"].([]any), fixtureEntry("urn:uuid:abc", fixturePatient(second)))
	entryOf(t, b, "DocumentReference", 1)["subject"] = obj{"reference": "Patient/" + second}
	sink := newMemSink()
	im := &Importer{Sink: sink, ParticipantID: participantID}
	res, err := im.ImportBundle(context.Background(), bytes.NewReader(marshal(t, b)), "b.json")
	if err != nil {
		t.Fatal(err)
	}
	if res.Patients != 2 || res.Documents != 3 {
		t.Errorf("result = %+v, want 2 patients, 3 documents", res)
	}
	for doc, patient := range map[string]string{
		"docref-inline":              fixturePatientID,
		"docref-binary":              second,
		"bundle-" + fixturePatientID: fixturePatientID, // the first patient
	} {
		if got := sink.docs[doc].GetPatient().GetPatientId(); got != patient {
			t.Errorf("document %s belongs to %q, want %q", doc, got, patient)
		}
	}
}

func TestImportBundle_NoBundleDocumentWithoutOtherResources(t *testing.T) {
	b := fixtureBundle()
	var kept []any
	for _, e := range b["entry"].([]any) {
		switch e.(obj)["resource"].(obj)["resourceType"] {
		case "Patient", "DocumentReference", "Binary":
			kept = append(kept, e)
		}
	}
	b["entry"] = kept
	sink := newMemSink()
	im := &Importer{Sink: sink, ParticipantID: participantID}
	res, err := im.ImportBundle(context.Background(), bytes.NewReader(marshal(t, b)), "b.json")
	if err != nil {
		t.Fatal(err)
	}
	if res.Documents != 2 || sink.docs["bundle-"+fixturePatientID] != nil {
		t.Errorf("documents = %v, want the two DocumentReferences only", keys(sink.docs))
	}
}

// TestImportFiles_BadBundleIsSkippedWithReason checks that each kind of bad
// bundle is skipped with a reason that names the problem and no PHI, that
// nothing of it is written, and that the import goes on.
func TestImportFiles_BadBundleIsSkippedWithReason(t *testing.T) {
	variant := func(change func(b obj)) []byte {
		b := fixtureBundle()
		change(b)
		return marshal(t, b)
	}
	for _, c := range []struct {
		name       string
		data       []byte
		wantReason string
		wantErr    error
	}{
		{"not JSON", []byte("José O'Connell, 1987-03-14\n"), "not valid JSON", nil},
		{"empty file", nil, "not valid JSON: unexpected end of data", nil},
		{"truncated", marshal(t, fixtureBundle())[:500], "not valid JSON", nil},
		{"JSON array", []byte(`[1, 2]`), "not a FHIR Bundle", ErrNotBundle},
		{"not a Bundle", marshal(t, fixturePatient(fixturePatientID)), "not a FHIR Bundle: resourceType is Patient", ErrNotBundle},
		{"no Patient", marshal(t, obj{"resourceType": "Bundle", "type": "transaction", "entry": []any{
			fixtureEntry("urn:uuid:o1", obj{"resourceType": "Organization", "id": "o1", "name": "General Hospital"}),
			fixtureEntry("urn:uuid:p1", obj{"resourceType": "Practitioner", "id": "p1"}),
		}}), "bundle holds no Patient resource", ErrNoPatient},
		{"missing Binary", variant(func(b obj) {
			entryOf(t, b, "DocumentReference", 1)["content"].([]any)[0].(obj)["attachment"].(obj)["url"] = "urn:uuid:nowhere"
		}), "DocumentReference docref-binary: attachment url references no Binary in this bundle", nil},
		{"invalid base64 inline", variant(func(b obj) {
			entryOf(t, b, "DocumentReference", 0)["content"].([]any)[0].(obj)["attachment"].(obj)["data"] = "José*O'Connell"
		}), "DocumentReference docref-inline: attachment data is not valid base64", nil},
		{"invalid base64 in Binary", variant(func(b obj) {
			entryOf(t, b, "Binary", 0)["data"] = "@@@@"
		}), "DocumentReference docref-binary: attachment data is not valid base64", nil},
		{"subject outside the bundle", variant(func(b obj) {
			entryOf(t, b, "DocumentReference", 0)["subject"] = obj{"reference": "Patient/elsewhere"}
		}), "DocumentReference docref-inline: subject: references neither a Patient in this bundle nor one this member holds", nil},
		{"two documents with one id", variant(func(b obj) {
			entryOf(t, b, "DocumentReference", 1)["id"] = "docref-inline"
		}), "two documents with id docref-inline", nil},
		{"wrong JSON type", variant(func(b obj) {
			entryOf(t, b, "Patient", 0)["name"] = "José O'Connell"
		}), "unexpected JSON string for name in entry[0] (Patient)", nil},
		{"number where a string belongs", variant(func(b obj) {
			entryOf(t, b, "Patient", 0)["birthDate"] = 19870314
		}), "unexpected JSON number for birthDate", nil},
		{"birth date not a FHIR date", variant(func(b obj) {
			entryOf(t, b, "Patient", 0)["birthDate"] = "14/03/1987"
		}), "birthDate is not a FHIR date", nil},
		{"patient id not a FHIR id", variant(func(b obj) {
			entryOf(t, b, "Patient", 0)["id"] = "José O'Connell"
		}), "entry[0]: Patient has no valid id", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			bad := writeFile(t, dir, "bad.json", c.data)
			good := writeFile(t, dir, "good.json", marshal(t, smallBundle("other-patient")))
			s := openStore(t)
			im := &Importer{Sink: s, ParticipantID: participantID}

			res, err := im.ImportFiles(context.Background(), []string{bad, good}, nil)
			if err != nil {
				t.Fatalf("ImportFiles stopped: %v", err)
			}
			if res.Files != 2 || res.Patients != 1 || len(res.Skipped) != 1 {
				t.Fatalf("result = %+v, want 2 files, 1 patient (the good one), 1 skipped", res)
			}
			skip := res.Skipped[0]
			if skip.File != bad || !strings.Contains(skip.Reason, c.wantReason) {
				t.Errorf("skip = %+v, want file %s and a reason with %q", skip, bad, c.wantReason)
			}
			patients, _, err := s.Counts()
			if err != nil {
				t.Fatal(err)
			}
			if patients != 1 {
				t.Errorf("store holds %d patients, want only the good bundle's", patients)
			}

			_, err = im.ImportBundle(context.Background(), bytes.NewReader(c.data), "bad.json")
			var be *BundleError
			if !errors.As(err, &be) || !strings.Contains(err.Error(), "bad.json") || !strings.Contains(err.Error(), c.wantReason) {
				t.Errorf("ImportBundle error = %v, want a *BundleError naming bad.json and %q", err, c.wantReason)
			}
			if c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Errorf("error %v is not %v", err, c.wantErr)
			}
			for _, phi := range fixturePHI {
				if strings.Contains(skip.Reason, phi) || strings.Contains(err.Error(), phi) {
					t.Errorf("reason %q / error %q holds PHI %q", skip.Reason, err, phi)
				}
			}
		})
	}
}

// smallBundle is a valid bundle of one patient and one observation.
func smallBundle(patientID string) obj {
	return obj{"resourceType": "Bundle", "entry": []any{
		fixtureEntry("urn:uuid:"+patientID, obj{"resourceType": "Patient", "id": patientID, "gender": "female"}),
		fixtureEntry("urn:uuid:obs-"+patientID, obj{"resourceType": "Observation", "id": "obs-" + patientID,
			"subject": obj{"reference": "urn:uuid:" + patientID}}),
	}}
}

func TestImportFiles_UnreadableFileIsSkipped(t *testing.T) {
	im := &Importer{Sink: newMemSink(), ParticipantID: participantID}
	missing := filepath.Join(t.TempDir(), "missing.json")
	res, err := im.ImportFiles(context.Background(), []string{missing}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Skipped) != 1 || res.Skipped[0].File != missing || !strings.Contains(res.Skipped[0].Reason, "open") {
		t.Errorf("skipped = %+v, want the missing file with an open error", res.Skipped)
	}
}

func TestImportFiles_SinkErrorStops(t *testing.T) {
	dir := t.TempDir()
	paths := []string{
		writeFile(t, dir, "a.json", marshal(t, smallBundle("a"))),
		writeFile(t, dir, "b.json", marshal(t, smallBundle("b"))),
	}
	sink := newMemSink()
	sink.fail = errors.New("disk full")
	im := &Importer{Sink: sink, ParticipantID: participantID}
	res, err := im.ImportFiles(context.Background(), paths, nil)
	if !errors.Is(err, sink.fail) || !strings.Contains(err.Error(), "a.json") {
		t.Errorf("error = %v, want the sink's error naming a.json", err)
	}
	if res.Files != 0 || res.Patients != 0 || len(res.Skipped) != 0 {
		t.Errorf("result = %+v, want to stop at the first file with nothing written or skipped", res)
	}
}

func TestImportFiles_CancelStops(t *testing.T) {
	dir := t.TempDir()
	var paths []string
	for _, id := range []string{"a", "b", "c"} {
		paths = append(paths, writeFile(t, dir, id+".json", marshal(t, smallBundle(id))))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	im := &Importer{Sink: newMemSink(), ParticipantID: participantID}
	res, err := im.ImportFiles(ctx, paths, func(done, total int) {
		if done == 1 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || res.Files != 1 {
		t.Errorf("got %+v, %v; want context.Canceled after 1 file", res, err)
	}
}

func TestImportDir_ReadsJSONFilesInNameOrder(t *testing.T) {
	dir := t.TempDir()
	noPatient := marshal(t, obj{"resourceType": "Bundle", "entry": []any{}})
	writeFile(t, dir, "b.json", noPatient)
	writeFile(t, dir, "a.json", noPatient)
	writeFile(t, dir, "notes.txt", []byte("not a bundle"))
	if err := os.Mkdir(filepath.Join(dir, "c.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	var calls [][2]int
	im := &Importer{Sink: newMemSink(), ParticipantID: participantID}
	res, err := im.ImportDir(context.Background(), dir, func(done, total int) { calls = append(calls, [2]int{done, total}) })
	if err != nil {
		t.Fatal(err)
	}
	if want := [][2]int{{1, 2}, {2, 2}}; !slices.Equal(calls, want) {
		t.Errorf("progress calls = %v, want %v", calls, want)
	}
	var files []string
	for _, s := range res.Skipped {
		files = append(files, filepath.Base(s.File))
	}
	if res.Files != 2 || !slices.Equal(files, []string{"a.json", "b.json"}) {
		t.Errorf("files = %d, skipped %v; want a.json then b.json", res.Files, files)
	}
}

func TestImporter_NeedsSinkAndParticipant(t *testing.T) {
	for _, im := range []*Importer{{ParticipantID: "p"}, {Sink: newMemSink()}} {
		if _, err := im.ImportBundle(context.Background(), bytes.NewReader(marshal(t, fixtureBundle())), "b.json"); err == nil {
			t.Errorf("%+v imported", im)
		}
	}
}

func TestImportBundle_TooLarge(t *testing.T) {
	im := &Importer{Sink: newMemSink(), ParticipantID: participantID, MaxBundleSize: 100}
	_, err := im.ImportBundle(context.Background(), bytes.NewReader(marshal(t, fixtureBundle())), "big.json")
	var be *BundleError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "larger than 100 bytes") {
		t.Errorf("error = %v, want a size BundleError", err)
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestImportBundle_BundleDocumentCreatedIsLatestTime(t *testing.T) {
	for _, c := range []struct {
		name  string
		times obj // fields added to the bundle's Observation
		want  time.Time
	}{
		{"no times: fixed fallback", obj{}, unknownTime},
		{"before 1970", obj{"effectiveDateTime": "1954-11-04T10:10:39+00:00"}, time.Date(1954, 11, 4, 10, 10, 39, 0, time.UTC)},
		{"period end wins over start", obj{"effectivePeriod": obj{"start": "2001-01-01T00:00:00Z", "end": "2001-01-02T00:00:00Z"}}, time.Date(2001, 1, 2, 0, 0, 0, 0, time.UTC)},
		{"meta.lastUpdated counts", obj{"meta": obj{"lastUpdated": "2020-02-02T02:02:02Z"}, "issued": "2019-01-01T00:00:00Z"}, time.Date(2020, 2, 2, 2, 2, 2, 0, time.UTC)},
		{"date only, and junk ignored", obj{"issued": "2005-07", "effectiveDateTime": "someday", "period": 7}, time.Date(2005, 7, 1, 0, 0, 0, 0, time.UTC)},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := smallBundle("p")
			for k, v := range c.times {
				entryOf(t, b, "Observation", 0)[k] = v
			}
			sink := newMemSink()
			im := &Importer{Sink: sink, ParticipantID: participantID}
			if _, err := im.ImportBundle(context.Background(), bytes.NewReader(marshal(t, b)), "b.json"); err != nil {
				t.Fatal(err)
			}
			if got := sink.docs["bundle-p"].GetCreated().AsTime(); !got.Equal(c.want) {
				t.Errorf("created = %v, want %v", got, c.want)
			}
		})
	}
}
