package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/openqhin/openqhin/pki"
)

func newPKICmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "pki", Short: "Create a trust domain CA and issue SVIDs"}
	cmd.AddCommand(newPKIInitCmd(), newPKIIssueCmd(), newPKIRotateCmd(g))
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
			st, err := pki.LoadCAState(caDir)
			if err != nil {
				return fmt.Errorf("--ca: %w", err)
			}
			ca := st.Signing
			ident, err := pki.ParseIdentityString(id)
			if err != nil {
				return fmt.Errorf("--id: %w", err)
			}
			svid, err := ca.Issue(ident.ID, ttl, hosts...)
			if err != nil {
				return fmt.Errorf("--id: %w", err)
			}
			// The bundle is every authority the CA directory trusts: during
			// a CA rotation, the old and the new CA.
			if err := pki.WriteSVID(out, svid, st.Bundle()); err != nil {
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

func newPKIRotateCmd(g *globals) *cobra.Command {
	var (
		caDir, phase         string
		ttl                  time.Duration
		propagation, overlap time.Duration
	)
	cmd := &cobra.Command{
		Use:   "rotate-ca",
		Short: "Replace the trust domain CA without a restart or a failed call",
		Long: `Rotate the CA of a CA directory in three phases:

  prepare   a new CA is created (next.pem) and joins bundle.pem; SVIDs are
            still signed by the old CA
  activate  the new CA signs; every SVID is re-issued under it; the old CA
            stays in the bundle
  retire    the bundle holds the new CA alone

Without --phase, the three run in order, waiting --propagation after
prepare (every node must trust the new CA before anyone presents an SVID it
signed) and --overlap after activate (every connection made under the old CA
must have been replaced: gRPC connections live at most 31m, Raft connections
30m). Interrupted, it picks up where the directory stands.

qhinctl dev's issuer reads the CA directory every second: it hands out the
new bundle, re-issues every SVID, and hands out the last bundle by itself.
For SVID files, follow each phase by hand: after prepare, copy bundle.pem
into every node's SVID directory; after activate, issue every node's SVID
again (qhinctl pki issue); after retire, copy bundle.pem again.`,
		Example: `  qhinctl pki rotate-ca --ca /tmp/openqhin-dev/ca --overlap 1m   # a dev network
  qhinctl pki rotate-ca --ca ./ca --phase prepare`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if caDir == "" {
				cfg, err := g.loadConfig()
				if err != nil || cfg.CA == "" {
					return errors.New("--ca: the CA directory is required (or a config whose ca: names it)")
				}
				caDir = cfg.CA
			}
			out := cmd.OutOrStdout()
			st, err := pki.LoadCAState(caDir)
			if err != nil {
				return fmt.Errorf("--ca: %w", err)
			}
			wait := func(d time.Duration, what string) error {
				fmt.Fprintf(out, "waiting %v: %s\n", d, what)
				select {
				case <-time.After(d):
					return nil
				case <-cmd.Context().Done():
					return fmt.Errorf("interrupted; run rotate-ca again to continue (the CA directory is in phase %s)", phaseOf(caDir))
				}
			}
			prepare := func() error {
				next, err := pki.PrepareRotation(caDir, ttl)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "prepared: new CA (serial %x, valid until %s) joins the bundle\n", next.Certificate().SerialNumber, next.Certificate().NotAfter.Format(time.DateOnly))
				return nil
			}
			activate := func() error {
				if err := pki.ActivateRotation(caDir, time.Now().Add(overlap)); err != nil {
					return err
				}
				fmt.Fprintln(out, "activated: the new CA signs every SVID from now on; the old CA stays in the bundle")
				return nil
			}
			retire := func() error {
				if err := pki.RetireRotation(caDir); err != nil {
					return err
				}
				fmt.Fprintln(out, "retired: the bundle holds the new CA alone")
				return nil
			}
			switch phase {
			case "prepare":
				return prepare()
			case "activate":
				return activate()
			case "retire":
				return retire()
			case "":
			default:
				return fmt.Errorf("--phase: prepare, activate or retire, not %q", phase)
			}
			if st.Phase() == "idle" {
				if err := prepare(); err != nil {
					return err
				}
				if err := wait(propagation, "every node learns the new bundle"); err != nil {
					return err
				}
			}
			if phaseOf(caDir) == "prepared" {
				if err := activate(); err != nil {
					return err
				}
			}
			if st, err = pki.LoadCAState(caDir); err != nil {
				return err
			}
			left := overlap
			if !st.RetireAfter.IsZero() {
				left = max(time.Until(st.RetireAfter), 0)
			}
			if err := wait(left, "connections made under the old CA are replaced"); err != nil {
				return err
			}
			return retire()
		},
	}
	cmd.Flags().StringVar(&caDir, "ca", "", "CA directory (default: the config's ca:)")
	cmd.Flags().StringVar(&phase, "phase", "", "run one phase only: prepare, activate or retire")
	cmd.Flags().DurationVar(&ttl, "ttl", pki.DefaultCATTL, "lifetime of the new CA")
	cmd.Flags().DurationVar(&propagation, "propagation", 10*time.Second, "wait between prepare and activate")
	cmd.Flags().DurationVar(&overlap, "overlap", 31*time.Minute, "wait between activate and retire")
	return cmd
}

func phaseOf(dir string) string {
	st, err := pki.LoadCAState(dir)
	if err != nil {
		return "unknown"
	}
	return st.Phase()
}
