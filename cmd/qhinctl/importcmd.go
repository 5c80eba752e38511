package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/openqhin/openqhin/participant"
	"github.com/openqhin/openqhin/participant/fhir"
	"github.com/openqhin/openqhin/participant/store"
	"github.com/openqhin/openqhin/participant/synth"
)

// openStore opens a participant's record store for an import.
func openStore(dataDir string) (*store.Store, error) {
	if dataDir == "" {
		return nil, errors.New("--data-dir is required")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	st, err := store.Open(filepath.Join(dataDir, "participant.db"))
	if err != nil {
		return nil, fmt.Errorf("%w (is the participant still running?)", err)
	}
	return st, nil
}

func newImportSyntheticCmd() *cobra.Command {
	var (
		dataDir, member string
		members         []string
		persons         int
		seed            int64
	)
	cmd := &cobra.Command{
		Use:   "synthetic",
		Short: "Load a member's share of a synthetic population",
		Long: `Generate a synthetic population of --patients persons registered across
--members (with the typos, nicknames, moves and missing phones real
registrations have) and load the share of --participant. The population
depends only on --seed, --patients and --members, so loading each member in
turn gives a consistent network.`,
		Example: `  qhinctl import synthetic --data-dir ./p1-data --participant p1 --members p1,p2 --patients 500`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if member == "" || !slices.Contains(members, member) {
				return errors.New("--participant: required, and must be one of --members")
			}
			st, err := openStore(dataDir)
			if err != nil {
				return err
			}
			defer st.Close()
			bar := progressbar.NewOptions(persons, progressbar.OptionSetDescription("generating"),
				progressbar.OptionSetWriter(cmd.ErrOrStderr()), progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
			err = participant.ImportSynthetic(cmd.Context(), synth.Options{Seed: seed, Persons: persons, Participants: members},
				map[string]participant.BatchSink{member: st}, func(done, _ int) { bar.Set(done) })
			bar.Finish()
			if err != nil {
				return err
			}
			np, nd, err := st.Counts()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s now holds %d patient(s) and %d document(s)\n", member, np, nd)
			printSharedPerson(cmd.OutOrStdout(), synth.Options{Seed: seed, Persons: persons, Participants: members})
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the participant's data directory (required)")
	cmd.Flags().StringVar(&member, "participant", "", "the participant to load (required)")
	cmd.Flags().StringSliceVar(&members, "members", nil, "every member of the population, e.g. p1,p2,p3 (required)")
	cmd.Flags().IntVar(&persons, "patients", 1000, "persons in the population")
	cmd.Flags().Int64Var(&seed, "seed", 1, "seed of the population")
	return cmd
}

// printSharedPerson prints the demographics of a person of the population
// whom two members hold unchanged, to query for once every member is
// loaded: with three or more members, the second and third hold it and a
// query by the first finds it at both.
func printSharedPerson(w io.Writer, opts synth.Options) {
	var holders []string
	var who string
	switch m := opts.Participants; {
	case len(m) >= 3:
		holders, who = m[1:3], fmt.Sprintf("a query by %s finds it at both", m[0])
	case len(m) == 2:
		holders, who = m, "a query by either finds it at the other"
	default:
		return
	}
	regs, err := synth.SharedPerson(opts, holders...)
	if err != nil {
		return
	}
	d := regs[0].Demographics
	fmt.Fprintf(w, "%s and %s both hold this person (%s):\n  --given %s --family %s --birth-date %s --gender %s\n",
		holders[0], holders[1], who, shellQuote(d.Given), shellQuote(d.Family), d.BirthDate, d.Gender)
}

func newImportFHIRCmd() *cobra.Command {
	var dataDir, participant string
	cmd := &cobra.Command{
		Use:   "fhir PATH...",
		Short: "Import FHIR R4 bundles into a stopped participant's store (see qhinctl import)",
		Long: `Import FHIR R4 JSON bundles (Synthea-shaped: Patient, DocumentReference with
inline data or a Binary, other resources kept as one FHIR document per
patient) into a participant's record store. Each PATH is a bundle or a
directory of *.json bundles. Stop the participant first: its store is locked
while it runs.`,
		Example: `  qhinctl import fhir --data-dir ./p1-data --participant p1 ./bundles`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if participant == "" {
				return errors.New("--participant is required")
			}
			var files []string
			for _, a := range args {
				fi, err := os.Stat(a)
				if err != nil {
					return err
				}
				if !fi.IsDir() {
					files = append(files, a)
					continue
				}
				m, err := filepath.Glob(filepath.Join(a, "*.json"))
				if err != nil {
					return err
				}
				files = append(files, m...)
			}
			st, err := openStore(dataDir)
			if err != nil {
				return err
			}
			defer st.Close()
			bar := progressbar.NewOptions(len(files), progressbar.OptionSetDescription("importing bundles"),
				progressbar.OptionSetWriter(cmd.ErrOrStderr()), progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
			key, err := st.IDKey()
			if err != nil {
				return err
			}
			im := &fhir.Importer{Sink: st, ParticipantID: participant, IDKey: key}
			res, err := im.ImportFiles(cmd.Context(), files, func(done, _ int) { bar.Set(done) })
			bar.Finish()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported %d bundle(s): %d patient(s), %d document(s); %d skipped\n",
				res.Files-len(res.Skipped), res.Patients, res.Documents, len(res.Skipped))
			for _, s := range res.Skipped {
				fmt.Fprintf(cmd.OutOrStdout(), "  skipped %s: %s\n", s.File, s.Reason)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the participant's data directory (required)")
	cmd.Flags().StringVar(&participant, "participant", "", "the participant's id (required)")
	return cmd
}
