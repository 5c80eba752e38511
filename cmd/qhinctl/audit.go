package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openqhin/openqhin/broker/audit"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read and verify the nodes' hash-chained audit ledgers (operator)",
		Long: `Every broker and every participant keeps its own hash-chained audit ledger:
each query, disclosure and refusal, with the caller, the end user, the purpose
and the outcome, and no demographics. An operator reads them here, node by
node: the brokers by default, a member's with --node.`,
	}
	cmd.AddCommand(newAuditListCmd(g), newAuditVerifyCmd(g), newAuditDisclosuresCmd(g))
	return cmd
}

// auditNode is one ledger to read: a node's name and a connection to it.
type auditNode struct {
	name string
	conn *grpc.ClientConn
}

// auditNodes dials the ledgers to read: the named nodes (broker or
// participant ids), or every broker of the cluster. Each connection
// accepts only the node's own SPIFFE ID.
func (g *globals) auditNodes(ctx context.Context, names []string) ([]auditNode, func(), error) {
	_, src, err := g.operator()
	if err != nil {
		return nil, nil, err
	}
	conn, err := g.operatorConn()
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, nil, err
	}
	td := svid.ID.TrustDomain()

	st, err := conn.Cluster().Status(ctx, &qhinv1.StatusRequest{})
	if err != nil {
		return nil, nil, err
	}
	addrs := map[string]string{} // node name → gRPC address
	roles := map[string]pki.Role{}
	var brokers []string
	for _, m := range st.Members {
		addrs[m.NodeId], roles[m.NodeId] = m.GrpcAddr, pki.RoleBroker
		brokers = append(brokers, m.NodeId)
	}
	if len(names) == 0 {
		names = brokers
	}
	for _, n := range names {
		if _, ok := addrs[n]; ok {
			continue
		}
		resp, err := conn.Directory().GetParticipant(ctx, &qhinv1.GetParticipantRequest{ParticipantId: n})
		if err != nil {
			return nil, nil, fmt.Errorf("--node %s: neither a broker of the cluster nor a member: %w", n, err)
		}
		addrs[n], roles[n] = resp.Participant.Endpoint, pki.RoleParticipant
	}

	var nodes []auditNode
	closeAll := func() {
		for _, n := range nodes {
			n.conn.Close()
		}
	}
	for _, n := range names {
		id, err := pki.NewIdentity(td, roles[n], n)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("--node %s: %w", n, err)
		}
		c, err := grpc.NewClient(addrs[n], grpc.WithTransportCredentials(pki.ClientCredentials(src, pki.AuthorizeID(id.ID))))
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		nodes = append(nodes, auditNode{name: n, conn: c})
	}
	return nodes, closeAll, nil
}

func newAuditListCmd(g *globals) *cobra.Command {
	var (
		nodes   []string
		since   string
		fhir    bool
		request qhinv1.ListAuditEntriesRequest
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List ledger entries, newest first",
		Example: `  qhinctl audit list --participant p1 --purpose T-TRTMNT --since 2026-01-01
  qhinctl audit list --node p2 --patient p2-000004
  qhinctl audit list --fhir > audit.ndjson      # FHIR R4 AuditEvent, one per line`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if since != "" {
				t, err := parseSince(since)
				if err != nil {
					return err
				}
				request.Since = timestamppb.New(t)
			}
			ctx, cancel := g.callContext(cmd.Context())
			defer cancel()
			targets, closeAll, err := g.auditNodes(ctx, nodes)
			if err != nil {
				return err
			}
			defer closeAll()
			w := cmd.OutOrStdout()
			t := &table{tw: newTabWriter(w)}
			if !fhir && g.output != "json" {
				t.row("NODE", "SEQ", "TIME", "ACTION", "INITIATOR", "PURPOSE", "OUTCOME", "EMERGENCY", "PATIENTS", "MEMBERS", "REASON")
			}
			for _, n := range targets {
				resp, err := qhinv1.NewAuditClient(n.conn).ListEntries(ctx, &request)
				if err != nil {
					return fmt.Errorf("%s: %w", n.name, err)
				}
				switch {
				case fhir:
					enc := json.NewEncoder(w)
					for _, e := range resp.Entries {
						if err := enc.Encode(audit.FHIR(resp.Node, e)); err != nil {
							return err
						}
					}
				case g.output == "json":
					b, err := protojson.Marshal(resp)
					if err != nil {
						return err
					}
					fmt.Fprintln(w, string(b))
				default:
					for _, e := range resp.Entries {
						emergency := ""
						if e.Emergency {
							emergency = "yes"
						}
						var members []string
						for _, m := range e.Members {
							members = append(members, m.ParticipantId+":"+strings.TrimPrefix(m.State.String(), "RESPONDER_STATE_"))
						}
						action := e.Action
						if e.Count > 1 {
							action = fmt.Sprintf("%s ×%d", action, e.Count)
						}
						t.row(n.name, e.Seq, e.Time.AsTime().Local().Format(time.DateTime), action, e.InitiatorParticipantId,
							e.PurposeOfUse, e.Outcome, emergency, strings.Join(e.PatientRefs, ","),
							strings.Join(members, ","), e.Reason)
					}
				}
			}
			return t.tw.Flush()
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&nodes, "node", nil, "the node(s) whose ledger to read: broker or participant ids (default: every broker)")
	f.StringVar(&request.ParticipantId, "participant", "", "only entries whose initiator, actor or members name this participant")
	f.StringVar(&request.PurposeOfUse, "purpose", "", "only entries of this exchange purpose")
	f.StringVar(&since, "since", "", "only entries at or after this time (YYYY-MM-DD or RFC 3339)")
	f.StringVar(&request.Patient, "patient", "", "only entries about this patient: a link or its reference at a broker, a local patient id at a participant")
	f.StringVar(&request.Action, "action", "", "only entries of this action (discover, documents, retrieve, refused, …)")
	f.Uint32Var(&request.Limit, "limit", 100, "at most this many entries per node (at most 1000)")
	f.BoolVar(&fhir, "fhir", false, "print FHIR R4 AuditEvent resources, one JSON object per line")
	return cmd
}

func newAuditVerifyCmd(g *globals) *cobra.Command {
	var nodes []string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Recompute each ledger's hash chain; name the first entry that does not hold",
		Example: `  qhinctl audit verify
  qhinctl audit verify --node b1,p1,p2,p3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.callContext(cmd.Context())
			defer cancel()
			targets, closeAll, err := g.auditNodes(ctx, nodes)
			if err != nil {
				return err
			}
			defer closeAll()
			w := cmd.OutOrStdout()
			t := &table{tw: newTabWriter(w)}
			if g.output != "json" {
				t.row("NODE", "ENTRIES", "OK", "HEAD HASH", "FIRST BROKEN", "PROBLEM")
			}
			broken := 0
			for _, n := range targets {
				resp, err := qhinv1.NewAuditClient(n.conn).VerifyLedger(ctx, &qhinv1.VerifyLedgerRequest{})
				if err != nil {
					return fmt.Errorf("%s: %w", n.name, err)
				}
				if !resp.Ok {
					broken++
				}
				if g.output == "json" {
					b, err := protojson.Marshal(resp)
					if err != nil {
						return err
					}
					fmt.Fprintln(w, string(b))
					continue
				}
				first := "-"
				if !resp.Ok {
					first = fmt.Sprint(resp.FirstBrokenSeq)
				}
				t.row(n.name, resp.Entries, resp.Ok, hex.EncodeToString(resp.HeadHash), first, resp.Problem)
			}
			if err := t.tw.Flush(); err != nil {
				return err
			}
			if broken > 0 {
				return fmt.Errorf("%d ledger(s) do not verify", broken)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&nodes, "node", nil, "the node(s) whose ledger to verify: broker or participant ids (default: every broker)")
	return cmd
}

// parseSince reads a date or an RFC 3339 time.
func parseSince(s string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since: want YYYY-MM-DD or an RFC 3339 time")
	}
	return t, nil
}
