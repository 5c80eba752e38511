package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// networkStatus is what qhinctl status reports.
type networkStatus struct {
	Leader       string         `json:"leader"`
	Brokers      []brokerStatus `json:"brokers"`
	Participants map[string]int `json:"participants_by_status"`
	Certificates []certStatus   `json:"certificates"`
}

type brokerStatus struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Addr    string `json:"grpc_addr"`
	Applied uint64 `json:"applied_index"`
	Detail  string `json:"detail,omitempty"`
}

type certStatus struct {
	Subject string    `json:"spiffe_id"`
	Expires time.Time `json:"expires"`
}

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Summarize the network: brokers and leader, members by status, certificate expiries",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, src, err := g.operator()
			if err != nil {
				return err
			}
			conn, err := client.Dial(cfg.Brokers, src, nil)
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := g.callContext(cmd.Context())
			defer cancel()
			st, err := conn.Cluster().Status(ctx, &qhinv1.StatusRequest{})
			if err != nil {
				return err
			}
			dir, err := conn.Directory().ListParticipants(ctx, &qhinv1.ListParticipantsRequest{})
			if err != nil {
				return err
			}
			out := networkStatus{Leader: st.LeaderId, Participants: map[string]int{"active": 0, "suspended": 0, "retired": 0}}
			for _, p := range dir.Participants {
				out.Participants[statusName(p.Status)]++
			}
			svid, err := src.GetX509SVID()
			if err == nil {
				out.Certificates = append(out.Certificates, certStatus{svid.ID.String(), svid.Certificates[0].NotAfter})
			}
			for _, m := range st.Members {
				b := brokerStatus{ID: m.NodeId, State: strings.ToLower(strings.TrimPrefix(m.State.String(), "NODE_STATE_")),
					Addr: m.GrpcAddr, Applied: m.AppliedIndex, Detail: m.Detail}
				out.Brokers = append(out.Brokers, b)
				if m.GrpcAddr == "" {
					continue
				}
				if c, err := peerCertificate(ctx, m.GrpcAddr, src); err == nil {
					out.Certificates = append(out.Certificates, c)
				}
			}
			if g.output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			t := &table{tw: newTabWriter(cmd.OutOrStdout())}
			t.line("leader: %s", out.Leader)
			t.row("BROKER", "STATE", "GRPC", "APPLIED", "DETAIL")
			for _, b := range out.Brokers {
				t.row(b.ID, b.State, b.Addr, b.Applied, b.Detail)
			}
			t.line("")
			t.line("members: %d active, %d suspended, %d retired", out.Participants["active"], out.Participants["suspended"], out.Participants["retired"])
			t.line("")
			t.row("CERTIFICATE", "EXPIRES", "IN")
			for _, c := range out.Certificates {
				t.row(c.Subject, c.Expires.Local().Format(time.DateTime), time.Until(c.Expires).Round(time.Hour))
			}
			return t.tw.Flush()
		},
	}
}

// peerCertificate asks one broker for its status and reads the expiry of
// the certificate it presented.
func peerCertificate(ctx context.Context, addr string, src pki.Source) (certStatus, error) {
	c, err := client.Dial([]string{addr}, src, nil)
	if err != nil {
		return certStatus{}, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err := c.Cluster().NodeStatus(ctx, &qhinv1.NodeStatusRequest{}, grpc.Peer(&p)); err != nil {
		return certStatus{}, err
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return certStatus{}, fmt.Errorf("%s presented no certificate", addr)
	}
	cert := info.State.PeerCertificates[0]
	id := addr
	if len(cert.URIs) > 0 {
		id = cert.URIs[0].String()
	}
	return certStatus{id, cert.NotAfter}, nil
}
