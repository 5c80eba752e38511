package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/openqhin/openqhin/pki"
)

func newPKICmd(*globals) *cobra.Command {
	cmd := &cobra.Command{Use: "pki", Short: "Create a trust domain CA and issue SVIDs"}
	cmd.AddCommand(newPKIInitCmd(), newPKIIssueCmd())
	return cmd
}

func newPKIInitCmd() *cobra.Command {
	var (
		td, out string
		ttl     time.Duration
	)
	cmd := &cobra.Command{
		Use:     "init",
		Short:   "Create the CA of a trust domain",
		Example: `  qhinctl pki init --trust-domain qhin.example.org --out ./ca`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			trust, err := spiffeid.TrustDomainFromString(td)
			if err != nil {
				return fmt.Errorf("--trust-domain: %w", err)
			}
			if out == "" {
				return errors.New("--out: a directory for the CA is required")
			}
			if _, err := pki.LoadCA(out); err == nil {
				return fmt.Errorf("--out: %s already holds a CA; refusing to replace it", out)
			}
			ca, err := pki.NewCA(trust, ttl)
			if err != nil {
				return err
			}
			if err := ca.Save(out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created CA for %s in %s (ca.pem, ca.key, bundle.pem), valid until %s\n",
				trust.IDString(), out, ca.Certificate().NotAfter.Format(time.DateOnly))
			return nil
		},
	}
	cmd.Flags().StringVar(&td, "trust-domain", "", "trust domain name, e.g. qhin.example.org (required)")
	cmd.Flags().StringVar(&out, "out", "", "directory to write the CA to (required)")
	cmd.Flags().DurationVar(&ttl, "ttl", pki.DefaultCATTL, "CA lifetime")
	cmd.MarkFlagRequired("trust-domain")
	cmd.MarkFlagRequired("out")
	return cmd
}

func newPKIIssueCmd() *cobra.Command {
	var (
		caDir, id, out string
		ttl            time.Duration
		hosts          []string
	)
	cmd := &cobra.Command{
		Use:     "issue",
		Short:   "Issue an X.509-SVID for a broker, participant or operator",
		Example: `  qhinctl pki issue --ca ./ca --id spiffe://qhin.example.org/participant/p1 --out ./p1-svid`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := pki.LoadCA(caDir)
			if err != nil {
				return fmt.Errorf("--ca: %w", err)
			}
			ident, err := pki.ParseIdentityString(id)
			if err != nil {
				return fmt.Errorf("--id: %w", err)
			}
			svid, err := ca.Issue(ident.ID, ttl, hosts...)
			if err != nil {
				return fmt.Errorf("--id: %w", err)
			}
			if err := pki.WriteSVID(out, svid, ca.Bundle()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "issued %s to %s (svid.pem, svid.key, bundle.pem), valid until %s\n",
				ident.ID, out, svid.Certificates[0].NotAfter.Format(time.DateTime))
			return nil
		},
	}
	cmd.Flags().StringVar(&caDir, "ca", "", "CA directory made by pki init (required)")
	cmd.Flags().StringVar(&id, "id", "", "SPIFFE ID: spiffe://TD/broker/ID, spiffe://TD/participant/ID or spiffe://TD/operator/NAME (required)")
	cmd.Flags().StringVar(&out, "out", "", "directory to write the SVID to (required)")
	cmd.Flags().DurationVar(&ttl, "ttl", pki.DefaultSVIDTTL, "SVID lifetime")
	cmd.Flags().StringSliceVar(&hosts, "host", nil, "DNS names or IPs to add as SANs, for tools that check host names (grpcurl)")
	cmd.MarkFlagRequired("ca")
	cmd.MarkFlagRequired("id")
	cmd.MarkFlagRequired("out")
	return cmd
}
