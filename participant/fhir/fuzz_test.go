package fhir

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// FuzzImportBundle checks that no input makes the importer panic, that every
// failure is a *BundleError (the sink never fails here), and that a success
// wrote at least one patient and only documents of patients it wrote.
func FuzzImportBundle(f *testing.F) {
	f.Add(marshal(f, fixtureBundle()))
	f.Add(marshal(f, smallBundle("p1")))
	f.Add(marshal(f, fixturePatient("p1")))
	f.Add([]byte(`{"resourceType":"Bundle","entry":[{"fullUrl":"urn:uuid:x","resource":{"resourceType":"Patient"}}]}`))
	f.Add([]byte(`{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"DocumentReference","id":"d","subject":{"reference":"Patient/p"},"content":[{"attachment":{"url":"Binary/b"}}]}},{"resource":{"resourceType":"Patient","id":"p"}},{"resource":{"resourceType":"Binary","id":"b","data":"aGk="}}]}`))
	f.Add([]byte(`{"entry":null,"resourceType":"Bundle"} x`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, data []byte) {
		sink := newMemSink()
		im := &Importer{Sink: sink, ParticipantID: participantID}
		res, err := im.ImportBundle(context.Background(), bytes.NewReader(data), "fuzz.json")
		if err != nil {
			var be *BundleError
			if !errors.As(err, &be) {
				t.Fatalf("error %v is not a *BundleError", err)
			}
			if len(sink.patients)+len(sink.docs) > 0 {
				t.Fatalf("a rejected bundle wrote %d patients, %d documents", len(sink.patients), len(sink.docs))
			}
			return
		}
		if res.Patients < 1 || res.Patients != len(sink.patients) || res.Documents != len(sink.docs) {
			t.Fatalf("result %+v, sink holds %d patients, %d documents", res, len(sink.patients), len(sink.docs))
		}
		for id, m := range sink.docs {
			if m.GetSourceParticipantId() != participantID || m.GetCreated() == nil {
				t.Fatalf("document %s: metadata %v", id, m)
			}
		}
	})
}
