package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// consentFlags name the patient: a member acting for its own patient
// (--as, or the config's participant), or an operator naming the home
// member (--participant).
type consentFlags struct {
	as, participant, patient string
	proxyName, proxyRel      string
}

func (c *consentFlags) add(cmd *cobra.Command, proxy bool) {
	f := cmd.Flags()
	f.StringVar(&c.as, "as", "", "act as this member of the config, for its own patient (default: the config's participant)")
	f.StringVar(&c.participant, "participant", "", "the patient's home member, acting as the config's operator (without --as)")
	f.StringVar(&c.patient, "patient", "", "the home member's local patient id")
	if proxy {
		f.StringVar(&c.proxyName, "proxy-name", "", "the representative who acts for the patient (a parent, guardian or health care proxy)")
		f.StringVar(&c.proxyRel, "proxy-relationship", "", "the representative's relationship to the patient, e.g. guardian")
	}
}

// source is the identity the call is made as: the operator's when only
// --participant is given, else the member's.
func (c *consentFlags) source(g *globals) (*client.Config, pki.Source, error) {
	if c.as == "" && c.participant != "" {
		return g.operator()
	}
	cfg, err := g.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	src, err := g.fromWorkloadAPI(context.Background(), "")
	if src == nil && err == nil {
		src, err = cfg.ParticipantSource(c.as)
	}
	return cfg, src, err
}

// member is the home member the call names: --participant, empty for a
// member acting for itself (the broker takes it from the certificate).
func (c *consentFlags) member() string {
	if c.as != "" && c.participant != "" && c.as != c.participant {
		return c.participant // the broker refuses it, naming the field
	}
	return c.participant
}

func (c *consentFlags) client(g *globals) (qhinv1.ConsentClient, func(), error) {
	cfg, src, err := c.source(g)
	if err != nil {
		return nil, nil, err
	}
	conn, err := client.Dial(cfg.Brokers, src, nil)
	if err != nil {
		return nil, nil, err
	}
	return qhinv1.NewConsentClient(conn.ClientConn), func() { conn.Close() }, nil
}

func newConsentCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "consent",
		Short: "Record and show patients' consent directives",
		Long: `A patient's consent directive is kept by the brokers, replicated like the
directory, keyed by the patient's home member and its local patient id. A
member records directives for its own patients (--as); an operator for any
member's (--participant). Every broker withholds the patient's records from
the queries the directive does not permit. A write returns once every broker
that still answers queries holds it: after "consent revoke" returns, no
broker discloses the patient's records for the revoked purposes.`,
	}
	cmd.AddCommand(newConsentSetCmd(g), newConsentRevokeCmd(g), newConsentShowCmd(g))
	return cmd
}

func newConsentSetCmd(g *globals) *cobra.Command {
	var (
		c                 consentFlags
		p                 personFlags
		optOut, emergency bool
		deny, allow       []string
	)
	cmd := &cobra.Command{
		Use:   "set",
		Short: "Replace a patient's directive",
		Example: `  qhinctl consent set --as p1 --patient p1-000001 --opt-out --allow T-TRTMNT --emergency-override
  qhinctl consent set --participant p2 --patient p2-000007 --deny T-PYMNT --deny T-HCO
  qhinctl consent set --given Maria --family Garcia --birth-date 1961-04-17 --gender female --deny T-PYMNT`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := p.check(&c); err != nil {
				return err
			}
			if p.set() {
				return consentByPerson(cmd, g, &p, "directive set", "the consent set", func(ctx context.Context, cl qhinv1.ConsentClient, person *qhinv1.PersonLookup) (*qhinv1.ConsentByDemographicsResponse, error) {
					return cl.SetConsentByDemographics(ctx, &qhinv1.SetConsentByDemographicsRequest{Person: person, Directive: &qhinv1.ConsentDirective{
						OptOut: optOut, DeniedPurposes: deny, AllowedPurposes: allow, EmergencyOverride: emergency,
						RecordedBy: &qhinv1.ConsentRecorder{ProxyName: c.proxyName, ProxyRelationship: c.proxyRel}}})
				})
			}
			cl, done, err := c.client(g)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := g.callContext(cmd.Context())
			defer cancel()
			resp, err := cl.SetConsent(ctx, &qhinv1.SetConsentRequest{Directive: &qhinv1.ConsentDirective{
				ParticipantId: c.member(), PatientId: c.patient, OptOut: optOut, DeniedPurposes: deny, AllowedPurposes: allow,
				EmergencyOverride: emergency, RecordedBy: &qhinv1.ConsentRecorder{ProxyName: c.proxyName, ProxyRelationship: c.proxyRel},
			}})
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), resp.Directive, func(t *table) { printDirective(t, resp.Directive) })
		},
	}
	c.add(cmd, true)
	p.add(cmd)
	f := cmd.Flags()
	f.BoolVar(&optOut, "opt-out", false, "the patient opts out of all exchange but the --allow purposes")
	f.StringArrayVar(&deny, "deny", nil, "refuse this purpose and the codes refining it (repeatable)")
	f.StringArrayVar(&allow, "allow", nil, "permit this purpose and the codes refining it (repeatable)")
	f.BoolVar(&emergency, "emergency-override", false, "a treatment query declared as an emergency, with a reason, passes the refusals")
	return cmd
}

func newConsentRevokeCmd(g *globals) *cobra.Command {
	var (
		c        consentFlags
		p        personFlags
		purposes []string
	)
	cmd := &cobra.Command{
		Use:   "revoke",
		Short: "Withdraw a patient's consent to some purposes, or to all exchange",
		Example: `  qhinctl consent revoke --as p1 --patient p1-000001                    # all exchange
  qhinctl consent revoke --as p1 --patient p1-000001 --purpose T-PYMNT
  qhinctl consent revoke --given Maria --family Garcia --birth-date 1961-04-17 --gender female   # operator: every member's records of her`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := p.check(&c); err != nil {
				return err
			}
			if p.set() {
				return consentByPerson(cmd, g, &p, "revoked", "the revoke", func(ctx context.Context, cl qhinv1.ConsentClient, person *qhinv1.PersonLookup) (*qhinv1.ConsentByDemographicsResponse, error) {
					return cl.RevokeConsentByDemographics(ctx, &qhinv1.RevokeConsentByDemographicsRequest{Person: person, Purposes: purposes,
						ProxyName: c.proxyName, ProxyRelationship: c.proxyRel})
				})
			}
			cl, done, err := c.client(g)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := g.callContext(cmd.Context())
			defer cancel()
			resp, err := cl.RevokeConsent(ctx, &qhinv1.RevokeConsentRequest{ParticipantId: c.member(), PatientId: c.patient,
				Purposes: purposes, ProxyName: c.proxyName, ProxyRelationship: c.proxyRel})
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), resp.Directive, func(t *table) {
				t.line("revoked: no broker discloses this patient's records for the revoked purposes from now on")
				printDirective(t, resp.Directive)
			})
		},
	}
	c.add(cmd, true)
	p.add(cmd)
	cmd.Flags().StringArrayVar(&purposes, "purpose", nil, "the purpose to withdraw (repeatable); none withdraws all exchange")
	return cmd
}

func newConsentShowCmd(g *globals) *cobra.Command {
	var c consentFlags
	cmd := &cobra.Command{
		Use:     "show",
		Short:   "Show a patient's directive",
		Example: `  qhinctl consent show --as p1 --patient p1-000001`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, done, err := c.client(g)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := g.callContext(cmd.Context())
			defer cancel()
			resp, err := cl.GetConsent(ctx, &qhinv1.GetConsentRequest{ParticipantId: c.member(), PatientId: c.patient})
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), resp, func(t *table) {
				if resp.Directive == nil {
					t.line("no directive: every purpose is permitted")
					return
				}
				printDirective(t, resp.Directive)
			})
		},
	}
	c.add(cmd, false)
	cmd.MarkFlagRequired("patient")
	return cmd
}

func printDirective(t *table, d *qhinv1.ConsentDirective) {
	list := func(l []string) string {
		if len(l) == 0 {
			return "-"
		}
		return strings.Join(l, ", ")
	}
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	t.row("PATIENT", d.ParticipantId+"/"+d.PatientId)
	t.row("OPT-OUT", yes(d.OptOut))
	t.row("DENIED", list(d.DeniedPurposes))
	t.row("ALLOWED", list(d.AllowedPurposes))
	t.row("EMERGENCY OVERRIDE", yes(d.EmergencyOverride))
	by := d.GetRecordedBy().GetActor()
	if p := d.GetRecordedBy().GetProxyName(); p != "" {
		by += fmt.Sprintf(" for representative %s (%s)", p, d.GetRecordedBy().GetProxyRelationship())
	}
	t.row("RECORDED BY", by)
	t.row("UPDATED", d.GetUpdated().AsTime().Format(time.RFC3339))
}

func newAuditDisclosuresCmd(g *globals) *cobra.Command {
	var (
		c     consentFlags
		p     personFlags
		since string
		limit uint32
	)
	cmd := &cobra.Command{
		Use:   "disclosures",
		Short: "Account for the disclosures of a member's record of a patient (every broker's ledger)",
		Long: `Lists, from every broker's ledger, the queries that disclosed a member's
record of a patient: when, to which member and end user, for what purpose,
and whether it was an emergency ("break the glass") access. A member asks for
its own patients (--as); an operator for any member's (--participant), or
for a person named by demographics (--given --family --birth-date --gender):
the brokers find the person's records at every member (the members' certain
matches) and every broker's ledger is read for each.`,
		Example: `  qhinctl audit disclosures --as p1 --patient p1-000001
  qhinctl audit disclosures --given Maria --family Garcia --birth-date 1961-04-17 --gender female`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := p.check(&c); err != nil {
				return err
			}
			if p.set() {
				return personDisclosures(cmd, g, &p, since, limit)
			}
			cfg, src, err := c.source(g)
			if err != nil {
				return err
			}
			req := &qhinv1.ListDisclosuresRequest{ParticipantId: c.member(), PatientId: c.patient, Limit: limit}
			if req.Since, err = parseDate("since", since); err != nil {
				return err
			}
			ctx, cancel := g.callContext(cmd.Context())
			defer cancel()
			conn, err := client.Dial(cfg.Brokers, src, nil)
			if err != nil {
				return err
			}
			defer conn.Close()
			out, failed, err := client.Disclosures(ctx, conn, src, []*qhinv1.ListDisclosuresRequest{req})
			if err != nil {
				return err
			}
			all := &qhinv1.ListDisclosuresResponse{Disclosures: out}
			perr := g.print(cmd.OutOrStdout(), all, func(t *table) {
				t.line("%d disclosure(s)", len(out))
				t.row("TIME", "BROKER", "TO", "END USER", "PURPOSE", "ACTION", "EMERGENCY")
				for _, d := range out {
					user := d.EndUser.GetId()
					if n := d.EndUser.GetName(); n != "" {
						user = n + " (" + user + ")"
					}
					em := "-"
					if d.Emergency {
						em = "yes: " + d.EmergencyReason
					}
					t.row(d.Time.AsTime().Format(time.RFC3339), d.Broker, d.InitiatorParticipantId, user, d.PurposeOfUse, d.Action, em)
				}
			})
			if perr != nil {
				return perr
			}
			if len(failed) > 0 {
				return fmt.Errorf("the accounting is incomplete: %s", strings.Join(failed, "; "))
			}
			return nil
		},
	}
	c.add(cmd, false)
	p.add(cmd)
	cmd.Flags().StringVar(&since, "since", "", "only disclosures on or after YYYY-MM-DD")
	cmd.Flags().Uint32Var(&limit, "limit", 100, "at most this many per broker, newest first (at most 1000)")
	return cmd
}

// emergencyFlags declare a query as an emergency ("break the glass")
// access.
type emergencyFlags struct {
	on     bool
	reason string
}

func (e *emergencyFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&e.on, "emergency", false, "emergency (\"break the glass\") access: a treatment query that may pass an opt-out whose directive allows it; needs --emergency-reason")
	cmd.Flags().StringVar(&e.reason, "emergency-reason", "", "why the emergency access is needed (recorded in the audit ledgers)")
}
