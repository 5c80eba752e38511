package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/openqhin/openqhin/participant/fhir"
	"github.com/openqhin/openqhin/participant/store"
)

func newImportCmd(*globals) *cobra.Command {
	var dataDir, participant string
	cmd := &cobra.Command{
		Use:   "import PATH...",
		Short: "Import FHIR R4 bundles into a stopped participant's store",
		Long: `Import FHIR R4 JSON bundles (Synthea-shaped: Patient, DocumentReference with
inline data or a Binary, other resources kept as one FHIR document per
patient) into a participant's record store. Each PATH is a bundle or a
directory of *.json bundles. Stop the participant first: its store is locked
while it runs.`,
		Example: `  qhinctl import --data-dir /var/lib/qhin-participant --participant p1 ./bundles`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" || participant == "" {
				return errors.New("--data-dir and --participant are required")
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
			if err := os.MkdirAll(dataDir, 0o700); err != nil {
				return err
			}
			st, err := store.Open(filepath.Join(dataDir, "participant.db"))
			if err != nil {
				return fmt.Errorf("%w (is the participant still running?)", err)
			}
			defer st.Close()
			bar := progressbar.NewOptions(len(files), progressbar.OptionSetDescription("importing bundles"),
				progressbar.OptionSetWriter(cmd.ErrOrStderr()), progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
			im := &fhir.Importer{Sink: st, ParticipantID: participant}
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
