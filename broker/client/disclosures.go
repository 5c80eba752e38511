package client

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Disclosures asks every broker of the cluster conn reaches for its
// ledger's part of the accounting of each record reqs name, and merges
// them, newest first. Every broker keeps its own ledger, so a broker that
// does not answer leaves the accounting incomplete: failed names it, with
// why. When every broker refused, the first refusal is returned.
func Disclosures(ctx context.Context, conn *Conn, src pki.Source, reqs []*qhinv1.ListDisclosuresRequest) (out []*qhinv1.Disclosure, failed []string, err error) {
	br, err := conn.Cluster().Brokers(ctx, &qhinv1.BrokersRequest{})
	if err != nil {
		return nil, nil, err
	}
	if len(br.GrpcAddrs) == 0 {
		return nil, nil, errors.New("the cluster names no brokers")
	}
	var first error
	for _, addr := range br.GrpcAddrs {
		c, err := Dial([]string{addr}, src, nil)
		if err != nil {
			failed = append(failed, fmt.Sprintf("broker %s: %v", addr, err))
			continue
		}
		cl := qhinv1.NewConsentClient(c.ClientConn)
		var got []*qhinv1.Disclosure
		for _, req := range reqs {
			resp, err := cl.ListDisclosures(ctx, proto.Clone(req).(*qhinv1.ListDisclosuresRequest))
			if err != nil {
				if first == nil {
					first = err
				}
				failed = append(failed, fmt.Sprintf("broker %s: %s", addr, status.Convert(err).Message()))
				break
			}
			got = append(got, resp.Disclosures...)
		}
		c.Close()
		out = append(out, got...)
	}
	if len(failed) == len(br.GrpcAddrs) && first != nil {
		return nil, nil, first
	}
	slices.SortStableFunc(out, func(a, b *qhinv1.Disclosure) int { return b.Time.AsTime().Compare(a.Time.AsTime()) })
	return out, failed, nil
}
