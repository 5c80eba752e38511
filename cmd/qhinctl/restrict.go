package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func newParticipantCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "participant",
		Short: "A member's own restrictions of its patients, on the running participant (operator)",
		Long: `A member may restrict one of its own patients locally, whatever the network's
consent says (a patient asked the hospital not to share): its Responder then
leaves the patient out of discovery answers for the restricted purposes (all
exchange when none is named), and lists and retrieves none of the patient's
documents. The restriction lives in the participant's store; these commands
talk to the running participant over mutual TLS as the operator.`,
	}
	api := new(string)
	cmd.PersistentFlags().StringVar(api, "api", "", "unix:PATH: call the member's own local API (qhin-participant --api-listen unix:PATH) instead, as the member's EHR, without the operator's identity")
	cmd.AddCommand(newRestrictCmd(g, api), newUnrestrictCmd(g, api), newRestrictionsCmd(g, api))
	return cmd
}

// restrictionsClient dials one participant's Restrictions service: on
// its Responder as the operator, or on the member's local API socket.
func (g *globals) restrictionsClient(ctx context.Context, api, participant string) (qhinv1.RestrictionsClient, func(), error) {
	if api != "" {
		path, ok := strings.CutPrefix(api, "unix:")
		if !ok || strings.TrimPrefix(path, "//") == "" {
			return nil, nil, errors.New("--api: want unix:PATH, the member's local API socket")
		}
		c, err := grpc.NewClient("unix://"+strings.TrimPrefix(path, "//"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, fmt.Errorf("--api: %w", err)
		}
		return qhinv1.NewRestrictionsClient(c), func() { c.Close() }, nil
	}
	if participant == "" {
		return nil, nil, errors.New("--participant is required (or --api)")
	}
	nodes, closeAll, err := g.auditNodes(ctx, []string{participant})
	if err != nil {
		return nil, nil, err
	}
	return qhinv1.NewRestrictionsClient(grpc.ClientConnInterface(nodes[0].conn)), closeAll, nil
}

func newRestrictCmd(g *globals, api *string) *cobra.Command {
	var member, patient string
	var purposes []string
	cmd := &cobra.Command{
		Use:   "restrict",
		Short: "Restrict one of the member's patients, for some purposes or all exchange",
		Example: `  qhinctl participant restrict --participant p2 --patient p2-000004 --purpose T-PYMNT
  qhinctl participant restrict --participant p2 --patient p2-000004     # all exchange`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.callContext(cmd.Context())
			defer cancel()
			c, closeAll, err := g.restrictionsClient(ctx, *api, member)
			if err != nil {
				return err
			}
			defer closeAll()
			resp, err := c.SetRestriction(ctx, &qhinv1.SetRestrictionRequest{PatientId: patient, Purposes: purposes})
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), resp, func(t *table) {
				t.line("%s restricts %s for %s", memberName(member), patient, restrictedFor(resp.Restriction))
			})
		},
	}
	cmd.Flags().StringVar(&member, "participant", "", "the member (required)")
	cmd.Flags().StringVar(&patient, "patient", "", "the member's local patient id (required)")
	cmd.Flags().StringArrayVar(&purposes, "purpose", nil, "an exchange purpose to restrict (repeatable; a code covers its sub-codes); all exchange when none")
	return cmd
}

func newUnrestrictCmd(g *globals, api *string) *cobra.Command {
	var member, patient string
	cmd := &cobra.Command{
		Use:     "unrestrict",
		Short:   "Lift a patient's local restriction",
		Example: `  qhinctl participant unrestrict --participant p2 --patient p2-000004`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.callContext(cmd.Context())
			defer cancel()
			c, closeAll, err := g.restrictionsClient(ctx, *api, member)
			if err != nil {
				return err
			}
			defer closeAll()
			resp, err := c.ClearRestriction(ctx, &qhinv1.ClearRestrictionRequest{PatientId: patient})
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), resp, func(t *table) {
				if resp.Cleared {
					t.line("%s no longer restricts %s", memberName(member), patient)
				} else {
					t.line("%s had no restriction of %s", memberName(member), patient)
				}
			})
		},
	}
	cmd.Flags().StringVar(&member, "participant", "", "the member (required)")
	cmd.Flags().StringVar(&patient, "patient", "", "the member's local patient id (required)")
	return cmd
}

func newRestrictionsCmd(g *globals, api *string) *cobra.Command {
	var member string
	cmd := &cobra.Command{
		Use:     "restrictions",
		Short:   "List a member's restricted patients",
		Example: `  qhinctl participant restrictions --participant p2`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.callContext(cmd.Context())
			defer cancel()
			c, closeAll, err := g.restrictionsClient(ctx, *api, member)
			if err != nil {
				return err
			}
			defer closeAll()
			resp, err := c.ListRestrictions(ctx, &qhinv1.ListRestrictionsRequest{})
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), resp, func(t *table) {
				t.row("PATIENT", "PURPOSES", "RECORDED BY", "AT")
				for _, r := range resp.Restrictions {
					t.row(r.PatientId, restrictedFor(r), r.RecordedBy, r.RecordedAt.AsTime().UTC().Format(time.RFC3339))
				}
			})
		},
	}
	cmd.Flags().StringVar(&member, "participant", "", "the member (required)")
	return cmd
}

// restrictedFor names what a restriction covers.
func restrictedFor(r *qhinv1.Restriction) string {
	if len(r.GetPurposes()) == 0 {
		return "all exchange"
	}
	return strings.Join(r.Purposes, ",")
}

// memberName names the member a command spoke to.
func memberName(id string) string {
	if id == "" {
		return "the member"
	}
	return id
}
