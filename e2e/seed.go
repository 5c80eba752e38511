package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/openqhin/openqhin/participant"
	"github.com/openqhin/openqhin/participant/fhir"
	"github.com/openqhin/openqhin/participant/synth"
)

// SeedCounts says what seeding wrote to one participant.
type SeedCounts struct {
	Participant string
	Patients    int
	Documents   int
	// Skipped lists bundles a FHIR import could not use, with the reason.
	Skipped []fhir.Skip
}

// records is where a participant's records go: its running Server (which
// also indexes them for matching) or its Store while it is stopped.
type records interface {
	participant.BatchSink
	fhir.Sink
	Counts() (patients, documents int, err error)
}

// SeedSynthetic fills every participant that holds no patients yet with its
// share of a synthetic population of persons people, registered across the
// participants with the variations real registrations have. progress is
// called with the persons done so far.
func (n *Network) SeedSynthetic(ctx context.Context, persons int, seed int64, progress func(done, total int)) ([]SeedCounts, error) {
	var ids []string
	var sinks []records
	for _, p := range n.Participants {
		ids = append(ids, p.ID)
		sinks = append(sinks, p.Server)
	}
	return seedSynthetic(ctx, ids, sinks, persons, seed, progress)
}

// seedSynthetic fills the sinks (of the participants ids, in order) that
// hold no patients yet with their shares of a synthetic population, and
// returns what every participant holds afterwards.
func seedSynthetic(ctx context.Context, ids []string, sinks []records, persons int, seed int64, progress func(done, total int)) ([]SeedCounts, error) {
	empty := map[string]participant.BatchSink{}
	for i, s := range sinks {
		np, _, err := s.Counts()
		if err != nil {
			return nil, fmt.Errorf("seed %s: %w", ids[i], err)
		}
		if np == 0 {
			empty[ids[i]] = s
		}
	}
	if len(empty) > 0 && persons > 0 {
		opts := synth.Options{Seed: seed, Persons: persons, Participants: ids}
		if err := participant.ImportSynthetic(ctx, opts, empty, progress); err != nil {
			return nil, err
		}
	}
	return countsOf(ids, sinks)
}

// seedFHIR imports every DIR/<participant-id>/*.json FHIR bundle into that
// participant's sink. progress is called with bundles done over all
// participants.
func seedFHIR(ctx context.Context, dir string, ids []string, sinks []records, progress func(done, total int)) ([]SeedCounts, error) {
	var out []SeedCounts
	files := map[string][]string{}
	total := 0
	for _, id := range ids {
		matches, err := filepath.Glob(filepath.Join(dir, id, "*.json"))
		if err != nil {
			return nil, err
		}
		files[id] = matches
		total += len(matches)
	}
	if total == 0 {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("seed FHIR: %w", err)
		}
		return nil, fmt.Errorf("seed FHIR: no bundles under %s/<participant-id>/*.json", dir)
	}
	base := 0
	for i, id := range ids {
		im := &fhir.Importer{Sink: sinks[i], ParticipantID: id}
		res, err := im.ImportFiles(ctx, files[id], func(done, _ int) {
			if progress != nil {
				progress(base+done, total)
			}
		})
		if err != nil {
			return nil, fmt.Errorf("seed FHIR into %s: %w", id, err)
		}
		base += len(files[id])
		out = append(out, SeedCounts{Participant: id, Patients: res.Patients, Documents: res.Documents, Skipped: res.Skipped})
	}
	return out, nil
}

func countsOf(ids []string, sinks []records) ([]SeedCounts, error) {
	var out []SeedCounts
	for i, s := range sinks {
		np, nd, err := s.Counts()
		if err != nil {
			return nil, fmt.Errorf("count records of %s: %w", ids[i], err)
		}
		out = append(out, SeedCounts{Participant: ids[i], Patients: np, Documents: nd})
	}
	return out, nil
}
