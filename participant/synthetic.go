package participant

import (
	"context"
	"fmt"

	"github.com/openqhin/openqhin/participant/store"
	"github.com/openqhin/openqhin/participant/synth"
)

// BatchSink takes records in batches: a Server (which also indexes them for
// matching) or a Store.
type BatchSink interface {
	PutPatients(ctx context.Context, ps []store.Patient) error
	PutDocuments(ctx context.Context, docs []store.NewDocument) error
}

// syntheticBatch is how many registrations go into one store transaction.
const syntheticBatch = 500

// ImportSynthetic generates the population opts describes and writes each
// member's share into its sink; members without a sink are generated but
// not written, so one member's share is the same whichever members are
// loaded at once. progress is called with the persons done so far.
func ImportSynthetic(ctx context.Context, opts synth.Options, sinks map[string]BatchSink, progress func(done, total int)) error {
	pending := map[string][]synth.Registration{}
	flush := func(id string) error {
		regs := pending[id]
		if len(regs) == 0 {
			return nil
		}
		pending[id] = nil
		ps := make([]store.Patient, 0, len(regs))
		var docs []store.NewDocument
		for _, r := range regs {
			ps = append(ps, store.Patient{ID: r.PatientID, Demographics: r.Demographics})
			for _, d := range r.Documents {
				m := cloneDoc(d.Meta)
				m.SourceParticipantId = id
				m.Patient.ParticipantId = id
				docs = append(docs, store.NewDocument{Meta: m, Content: d.Content})
			}
		}
		if err := sinks[id].PutPatients(ctx, ps); err != nil {
			return fmt.Errorf("synthetic records for %s: %w", id, err)
		}
		if err := sinks[id].PutDocuments(ctx, docs); err != nil {
			return fmt.Errorf("synthetic records for %s: %w", id, err)
		}
		return nil
	}
	done, lastPerson := 0, ""
	err := synth.Generate(opts, func(r synth.Registration) error {
		if r.PersonID != lastPerson {
			lastPerson = r.PersonID
			done++
			if progress != nil && done%100 == 0 {
				progress(done, opts.Persons)
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if _, ok := sinks[r.ParticipantID]; !ok {
			return nil
		}
		pending[r.ParticipantID] = append(pending[r.ParticipantID], r)
		if len(pending[r.ParticipantID]) >= syntheticBatch {
			return flush(r.ParticipantID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for id := range sinks {
		if err := flush(id); err != nil {
			return err
		}
	}
	if progress != nil {
		progress(opts.Persons, opts.Persons)
	}
	return nil
}
