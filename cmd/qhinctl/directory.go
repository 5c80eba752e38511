package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/openqhin/openqhin/broker/client"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func newDirectoryCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "directory", Short: "Manage the network's members (operators)"}
	cmd.AddCommand(
		newDirectoryListCmd(g),
		newDirectoryGetCmd(g),
		newDirectoryRegisterCmd(g, false),
		newDirectoryRegisterCmd(g, true),
		newDirectoryStatusCmd(g, "suspend", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_SUSPENDED, "Suspend a member: it may neither query nor be asked"),
		newDirectoryStatusCmd(g, "resume", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_ACTIVE, "Resume a suspended member"),
		newDirectoryStatusCmd(g, "retire", qhinv1.ParticipantStatus_PARTICIPANT_STATUS_RETIRED, "Retire a member for good"),
	)
	return cmd
}

func statusName(s qhinv1.ParticipantStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "PARTICIPANT_STATUS_"))
}

func parseStatus(s string) (qhinv1.ParticipantStatus, error) {
	if s == "" {
		return qhinv1.ParticipantStatus_PARTICIPANT_STATUS_UNSPECIFIED, nil
	}
	v, ok := qhinv1.ParticipantStatus_value["PARTICIPANT_STATUS_"+strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, fmt.Errorf("--status: must be active, suspended or retired, not %q", s)
	}
	return qhinv1.ParticipantStatus(v), nil
}

func purposes(list []string) string {
	if len(list) == 0 {
		return "all"
	}
	return strings.Join(list, ",")
}

func printParticipants(t *table, ps []*qhinv1.Participant) {
	t.row("ID", "ORGANIZATION", "STATUS", "ENDPOINT", "INITIATES", "ANSWERS", "UPDATED")
	for _, p := range ps {
		t.row(p.Id, p.Organization, statusName(p.Status), p.Endpoint, purposes(p.InitiatePurposes),
			purposes(p.RespondPurposes), p.UpdatedAt.AsTime().Local().Format(time.DateTime))
	}
}

func withOperator(g *globals, cmd *cobra.Command, fn func(conn *client.Conn) error) error {
	conn, err := g.operatorConn()
	if err != nil {
		return err
	}
	defer conn.Close()
	return fn(conn)
}

func newDirectoryListCmd(g *globals) *cobra.Command {
	var (
		consistent bool
		st         string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List members",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			status, err := parseStatus(st)
			if err != nil {
				return err
			}
			return withOperator(g, cmd, func(conn *client.Conn) error {
				ctx, cancel := g.callContext(cmd.Context())
				defer cancel()
				resp, err := conn.Directory().ListParticipants(ctx, &qhinv1.ListParticipantsRequest{Consistent: consistent, Status: status})
				if err != nil {
					return err
				}
				return g.print(cmd.OutOrStdout(), resp, func(t *table) { printParticipants(t, resp.Participants) })
			})
		},
	}
	cmd.Flags().BoolVar(&consistent, "consistent", false, "linearizable read: reflect every write acknowledged before it")
	cmd.Flags().StringVar(&st, "status", "", "only members with this status: active, suspended or retired")
	return cmd
}

func newDirectoryGetCmd(g *globals) *cobra.Command {
	var consistent bool
	cmd := &cobra.Command{
		Use:   "get PARTICIPANT_ID",
		Short: "Show one member",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOperator(g, cmd, func(conn *client.Conn) error {
				ctx, cancel := g.callContext(cmd.Context())
				defer cancel()
				resp, err := conn.Directory().GetParticipant(ctx, &qhinv1.GetParticipantRequest{ParticipantId: args[0], Consistent: consistent})
				if err != nil {
					return err
				}
				return g.print(cmd.OutOrStdout(), resp, func(t *table) {
					p := resp.Participant
					t.row("id", p.Id)
					t.row("organization", p.Organization)
					t.row("spiffe id", p.SpiffeId)
					t.row("endpoint", p.Endpoint)
					t.row("status", statusName(p.Status))
					t.row("status reason", p.StatusReason)
					t.row("initiates", purposes(p.InitiatePurposes))
					t.row("answers", purposes(p.RespondPurposes))
					t.row("home community id", p.HomeCommunityId)
					t.row("created", p.CreatedAt.AsTime().Local().Format(time.DateTime))
					t.row("updated", p.UpdatedAt.AsTime().Local().Format(time.DateTime))
				})
			})
		},
	}
	cmd.Flags().BoolVar(&consistent, "consistent", false, "linearizable read")
	return cmd
}

func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func newDirectoryRegisterCmd(g *globals, update bool) *cobra.Command {
	p := &qhinv1.Participant{}
	use, short := "register PARTICIPANT_ID", "Add a member to the network"
	if update {
		use, short = "update PARTICIPANT_ID", "Change a member's organization, endpoint or purposes"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Example: `  qhinctl directory register p4 --organization "Bayside Clinic" --endpoint 10.0.0.7:7521 \
    --initiate-purposes T-TRTMNT,T-TREAT --respond-purposes all`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p.Id = args[0]
			if len(p.InitiatePurposes) == 0 && len(p.RespondPurposes) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "qhinctl: %s may neither initiate nor answer any exchange purpose (pass --initiate-purposes and --respond-purposes; all for every purpose)\n", p.Id)
			}
			return withOperator(g, cmd, func(conn *client.Conn) error {
				ctx, cancel := g.callContext(cmd.Context())
				defer cancel()
				var out *qhinv1.Participant
				if update {
					resp, err := conn.Directory().UpdateParticipant(ctx, &qhinv1.UpdateParticipantRequest{Participant: p, RequestId: newRequestID()})
					if err != nil {
						return err
					}
					out = resp.Participant
				} else {
					resp, err := conn.Directory().RegisterParticipant(ctx, &qhinv1.RegisterParticipantRequest{Participant: p, RequestId: newRequestID()})
					if err != nil {
						return err
					}
					out = resp.Participant
				}
				return g.print(cmd.OutOrStdout(), out, func(t *table) { printParticipants(t, []*qhinv1.Participant{out}) })
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.Organization, "organization", "", "organization name")
	f.StringVar(&p.Endpoint, "endpoint", "", "host:port of the member's Responder (required)")
	f.StringSliceVar(&p.InitiatePurposes, "initiate-purposes", nil, "purposes the member may initiate, or all (none when absent)")
	f.StringSliceVar(&p.RespondPurposes, "respond-purposes", nil, "purposes the member answers, or all (none when absent)")
	f.StringVar(&p.HomeCommunityId, "home-community-id", "", "IHE home community id (urn:oid:…)")
	return cmd
}

func newDirectoryStatusCmd(g *globals, verb string, status qhinv1.ParticipantStatus, short string) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   verb + " PARTICIPANT_ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withOperator(g, cmd, func(conn *client.Conn) error {
				ctx, cancel := g.callContext(cmd.Context())
				defer cancel()
				resp, err := conn.Directory().SetParticipantStatus(ctx, &qhinv1.SetParticipantStatusRequest{
					ParticipantId: args[0], Status: status, Reason: reason, RequestId: newRequestID(),
				})
				if err != nil {
					return err
				}
				return g.print(cmd.OutOrStdout(), resp.Participant, func(t *table) { printParticipants(t, []*qhinv1.Participant{resp.Participant}) })
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the record")
	return cmd
}
