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

// SeedSynthetic fills every participant that holds no patients yet with its
// share of a synthetic population of persons people, registered across the
// participants with the variations real registrations have. progress is
// called with the persons done so far.
func (n *Network) SeedSynthetic(ctx context.Context, persons int, seed int64, progress func(done, total int)) ([]SeedCounts, error) {
	var ids []string
	sinks := map[string]participant.BatchSink{}
	for _, p := range n.Participants {
		ids = append(ids, p.ID)
		if np, _, err := p.Server.Counts(); err == nil && np == 0 {
			sinks[p.ID] = p.Server
		}
	}
	if len(sinks) > 0 && persons > 0 {
		opts := synth.Options{Seed: seed, Persons: persons, Participants: ids}
		if err := participant.ImportSynthetic(ctx, opts, sinks, progress); err != nil {
			return nil, err
		}
	}
	return n.countsOf(), nil
}

// SeedFHIR imports every DIR/<participant-id>/*.json FHIR bundle into that
// participant. progress is called with bundles done over all participants.
func (n *Network) SeedFHIR(ctx context.Context, dir string, progress func(done, total int)) ([]SeedCounts, error) {
	var out []SeedCounts
	files := map[string][]string{}
	total := 0
	for _, p := range n.Participants {
		matches, err := filepath.Glob(filepath.Join(dir, p.ID, "*.json"))
		if err != nil {
			return nil, err
		}
		files[p.ID] = matches
		total += len(matches)
	}
	if total == 0 {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("seed FHIR: %w", err)
		}
		return nil, fmt.Errorf("seed FHIR: no bundles under %s/<participant-id>/*.json", dir)
	}
	base := 0
	for _, p := range n.Participants {
		im := &fhir.Importer{Sink: p.Server, ParticipantID: p.ID}
		res, err := im.ImportFiles(ctx, files[p.ID], func(done, _ int) {
			if progress != nil {
				progress(base+done, total)
			}
		})
		if err != nil {
			return nil, fmt.Errorf("seed FHIR into %s: %w", p.ID, err)
		}
		base += len(files[p.ID])
		out = append(out, SeedCounts{Participant: p.ID, Patients: res.Patients, Documents: res.Documents, Skipped: res.Skipped})
	}
	return out, nil
}

func (n *Network) countsOf() []SeedCounts {
	var out []SeedCounts
	for _, p := range n.Participants {
		np, nd, _ := p.Server.Counts()
		out = append(out, SeedCounts{Participant: p.ID, Patients: np, Documents: nd})
	}
	return out
}
