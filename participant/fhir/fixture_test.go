package fhir

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// The fixture: one Synthea-shaped bundle with every kind of entry the
// importer reads. Its PHI values are listed in fixturePHI so that tests can
// check that no error or skip reason repeats them.
const (
	fixturePatientID = "6a0e1b3c-1111-4222-8333-000000000001"
	fixtureBinaryURL = "urn:uuid:6a0e1b3c-1111-4222-8333-0000000000b1"
	participantID    = "hospital-a"
)

var (
	inlineContent = []byte("Admission H&P: patient is well. ✓\n")
	binaryContent = []byte("<html><body><p>Progress note — día 2</p></body></html>")
	fixturePHI    = []string{
		"José", "María", "O'Connell", "Ramírez", "Josefa", "1987-03-14",
		"Rue d'Été", "Springfield", "01103", "555-201-7788", "MRN-778812", "999-12-3456",
	}
)

type obj = map[string]any

func fixturePatient(id string) obj {
	return obj{
		"resourceType": "Patient",
		"id":           id,
		"extension": []any{obj{
			"url":         "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
			"valueString": "Ana Pérez",
		}},
		"identifier": []any{
			obj{"system": "https://github.com/synthetichealth/synthea", "value": "synthea-0001"},
			obj{
				"type":   obj{"coding": []any{obj{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR", "display": "Medical Record Number"}}, "text": "Medical Record Number"},
				"system": "http://hospital.smarthealthit.org",
				"value":  "MRN-778812",
			},
			obj{
				"type":   obj{"coding": []any{obj{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS"}}},
				"system": "http://hl7.org/fhir/sid/us-ssn",
				"value":  "999-12-3456",
			},
		},
		"name": []any{
			obj{"use": "maiden", "family": "Ramírez57", "given": []any{"Josefa12"}},
			obj{"use": "official", "family": "O'Connell67", "given": []any{"José352", "María88"}, "prefix": []any{"Mr."}},
		},
		"telecom": []any{
			obj{"system": "email", "value": "jm@example.org"},
			obj{"system": "phone", "value": "555-201-7788", "use": "home"},
		},
		"gender":    "male",
		"birthDate": "1987-03-14",
		"address": []any{
			obj{
				"extension":  []any{obj{"url": "http://hl7.org/fhir/StructureDefinition/geolocation", "extension": []any{obj{"url": "latitude", "valueDecimal": 42.1}}}},
				"line":       []any{"12 Rue d'Été", "Apt 3"},
				"city":       "Springfield",
				"state":      "Massachusetts",
				"postalCode": "01103",
				"country":    "US",
			},
			obj{"line": []any{"1 Other St"}, "city": "Boston"},
		},
		"meta": obj{"lastUpdated": "2019-01-01T00:00:00Z"},
	}
}

func fixtureEntry(fullURL string, resource obj) obj {
	return obj{
		"fullUrl":  fullURL,
		"resource": resource,
		"request":  obj{"method": "POST", "url": resource["resourceType"]},
	}
}

// fixtureBundle returns the fixture as a JSON-ready value; tests change it
// to make variants.
func fixtureBundle() obj {
	subject := obj{"reference": "urn:uuid:" + fixturePatientID}
	return obj{
		"resourceType": "Bundle",
		"type":         "transaction",
		"entry": []any{
			fixtureEntry("urn:uuid:"+fixturePatientID, fixturePatient(fixturePatientID)),
			fixtureEntry("urn:uuid:6a0e1b3c-1111-4222-8333-0000000000e1", obj{
				"resourceType": "Encounter", "id": "6a0e1b3c-1111-4222-8333-0000000000e1",
				"type":    []any{obj{"coding": []any{obj{"code": "185349003"}}}},
				"subject": subject,
				"period":  obj{"start": "2019-05-02T10:00:00+00:00", "end": "2019-05-02T10:30:00+00:00"},
			}),
			fixtureEntry("urn:uuid:6a0e1b3c-1111-4222-8333-0000000000f1", obj{
				"resourceType": "Observation", "id": "6a0e1b3c-1111-4222-8333-0000000000f1",
				"subject":           subject,
				"effectiveDateTime": "2019-06-10T07:00:00-04:00",
				// The latest time of the bundle: 2019-06-10T12:00:00.25Z.
				"issued":        "2019-06-10T08:00:00.250-04:00",
				"valueQuantity": obj{"value": 72, "unit": "kg"},
			}),
			fixtureEntry("urn:uuid:6a0e1b3c-1111-4222-8333-0000000000c1", obj{
				"resourceType": "Condition", "id": "6a0e1b3c-1111-4222-8333-0000000000c1",
				"subject":       subject,
				"onsetDateTime": "2018-01-01T00:00:00+00:00",
				"code":          obj{"text": "Viral sinusitis"},
			}),
			fixtureEntry("urn:uuid:6a0e1b3c-1111-4222-8333-0000000000d1", obj{
				"resourceType": "DocumentReference", "id": "docref-inline",
				"subject":     subject,
				"type":        obj{"coding": []any{obj{"system": "http://loinc.org", "code": "34117-2", "display": "History and physical note"}}},
				"description": "Admission H&P",
				"date":        "2019-05-02T11:00:00Z",
				"content": []any{obj{"attachment": obj{
					"contentType": "text/plain",
					"data":        base64.StdEncoding.EncodeToString(inlineContent),
				}}},
			}),
			fixtureEntry("urn:uuid:6a0e1b3c-1111-4222-8333-0000000000d2", obj{
				"resourceType": "DocumentReference", "id": "docref-binary",
				"subject": obj{"reference": "Patient/" + fixturePatientID},
				"type":    obj{"coding": []any{obj{"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"}}, "text": "Progress note (text)"},
				"date":    "2019-05-03T12:00:00+02:00",
				"content": []any{obj{"attachment": obj{
					"contentType": "application/octet-stream",
					"url":         fixtureBinaryURL,
				}}},
			}),
			fixtureEntry(fixtureBinaryURL, obj{
				"resourceType": "Binary", "id": "bin-1",
				"contentType": "text/html",
				"data":        base64.StdEncoding.EncodeToString(binaryContent),
			}),
		},
	}
}

// entryOf returns the resource of the bundle's first entry of type typ.
func entryOf(t testing.TB, b obj, typ string, n int) obj {
	t.Helper()
	for _, e := range b["entry"].([]any) {
		r := e.(obj)["resource"].(obj)
		if r["resourceType"] == typ {
			if n == 0 {
				return r
			}
			n--
		}
	}
	t.Fatalf("fixture has no %s", typ)
	return nil
}

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func openStore(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.Open(filepath.Join(t.TempDir(), "p.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func readContent(t testing.TB, s *store.Store, id string) []byte {
	t.Helper()
	var buf []byte
	err := s.StreamDocument(context.Background(), id,
		func(*qhinv1.DocumentMetadata) error { return nil },
		func(c []byte) error { buf = append(buf, c...); return nil })
	if err != nil {
		t.Fatalf("read document %s: %v", id, err)
	}
	return buf
}

// memSink is an in-memory Sink that holds the store's contract: a document
// needs its patient.
type memSink struct {
	mu       sync.Mutex
	patients map[string]*qhinv1.Demographics
	docs     map[string]*qhinv1.DocumentMetadata
	fail     error // returned by every call when set
}

func newMemSink() *memSink {
	return &memSink{patients: map[string]*qhinv1.Demographics{}, docs: map[string]*qhinv1.DocumentMetadata{}}
}

func (m *memSink) Apply(ctx context.Context, b store.Batch) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	patients := maps.Clone(m.patients)
	for _, id := range b.DeletePatients {
		if _, ok := patients[id]; !ok {
			return fmt.Errorf("delete unknown patient %q", id)
		}
		delete(patients, id)
	}
	for _, p := range b.Patients {
		if p.ID == "" {
			return fmt.Errorf("empty patient id")
		}
		patients[p.ID] = proto.Clone(p.Demographics).(*qhinv1.Demographics)
	}
	docs := maps.Clone(m.docs)
	for _, d := range b.Documents {
		if _, ok := patients[d.Meta.GetPatient().GetPatientId()]; !ok || d.Meta.GetId() == "" {
			return fmt.Errorf("document %q for unknown patient %q", d.Meta.GetId(), d.Meta.GetPatient().GetPatientId())
		}
		out := proto.Clone(d.Meta).(*qhinv1.DocumentMetadata)
		out.Size = int64(len(d.Content))
		docs[d.Meta.Id] = out
	}
	m.patients, m.docs = patients, docs
	return nil
}

func (m *memSink) HasPatient(id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.patients[id]
	return ok, nil
}

// storeFilterAll lists every document.
var storeFilterAll = store.Filter{}

type storePatient = store.Patient

// The participant store is a Sink.
var _ Sink = (*store.Store)(nil)
