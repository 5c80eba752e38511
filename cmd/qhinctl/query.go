package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// queryFlags are what every query carries: the purpose, the end user, and
// which member asks.
type queryFlags struct {
	purpose                 string
	as                      string
	reqID, reqName, reqRole string
	reqOrg, reqNPI          string
	emergency               emergencyFlags
}

func (q *queryFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&q.purpose, "purpose", "", "TEFCA exchange purpose code, e.g. T-TRTMNT (required)")
	cmd.Flags().StringVar(&q.as, "as", "", "query as this participant of the config (default: the config's participant)")
	name := "qhinctl"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	cmd.Flags().StringVar(&q.reqID, "requester-id", name, "end user's id (an NPI for clinicians)")
	cmd.Flags().StringVar(&q.reqName, "requester-name", "", "end user's name")
	cmd.Flags().StringVar(&q.reqRole, "requester-role", "", "end user's role, e.g. physician")
	cmd.Flags().StringVar(&q.reqOrg, "requester-org", "", "end user's organization")
	cmd.Flags().StringVar(&q.reqNPI, "requester-npi", "", "end user's National Provider Identifier (10 digits; required for T-TRTMNT)")
	q.emergency.add(cmd)
	cmd.MarkFlagRequired("purpose")
}

func (q *queryFlags) requester() *qhinv1.Requester {
	return &qhinv1.Requester{Id: q.reqID, Name: q.reqName, Role: q.reqRole, Organization: q.reqOrg, Npi: q.reqNPI}
}

func newQueryCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "query", Short: "Query the network as a member"}
	cmd.AddCommand(newQueryPatientsCmd(g), newQueryDocumentsCmd(g))
	return cmd
}

func newQueryPatientsCmd(g *globals) *cobra.Command {
	var q queryFlags
	tokens := true
	d := &qhinv1.Demographics{Address: &qhinv1.Address{}}
	cmd := &cobra.Command{
		Use:   "patients",
		Short: "Find a person's records across the network (patient discovery)",
		Example: `  qhinctl query patients --given Maria --family Garcia --birth-date 1961-04-17 \
    --gender female --purpose T-TRTMNT`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &qhinv1.DiscoverPatientsRequest{PurposeOfUse: q.purpose, Requester: q.requester(), Demographics: d,
				Emergency: q.emergency.on, EmergencyReason: q.emergency.reason}
			if tokens {
				cfg, err := g.loadConfig()
				if err != nil {
					return err
				}
				key, err := g.linkageKey(cfg)
				if err != nil {
					return err
				}
				if key != nil {
					if t := key.QueryTokens(d); t != nil {
						req.LocatorTokens = []*qhinv1.LocatorTokens{t}
					}
				}
			}
			conn, err := g.participantConn(q.as)
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := g.callContext(cmd.Context())
			defer cancel()
			resp, err := conn.Gateway().DiscoverPatients(ctx, req)
			if err != nil {
				return err
			}
			book, err := g.linkBook(q.as)
			if err != nil {
				return err
			}
			for _, p := range resp.Persons {
				for _, l := range p.Links {
					book.add(l.ParticipantId+"/"+l.PatientId, l.Link)
				}
			}
			if err := book.save(); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "qhinctl: could not remember the links for the next command: %v\n", err)
			}
			return g.print(cmd.OutOrStdout(), resp, func(t *table) {
				t.line("query %s: %d person(s)", resp.QueryId, len(resp.Persons))
				t.row("PERSON", "LINK", "SCORE", "NAME", "BIRTH DATE", "GENDER", "POSTAL CODE")
				for i, p := range resp.Persons {
					for k, l := range p.Links {
						name, birth, gender, postal := "", "", "", ""
						if k == 0 {
							name = p.Demographics.GetGiven() + " " + p.Demographics.GetFamily()
							birth, gender, postal = p.Demographics.GetBirthDate(), p.Demographics.GetGender(), p.Demographics.GetAddress().GetPostalCode()
						}
						t.row(i+1, l.ParticipantId+"/"+l.PatientId, fmt.Sprintf("%.2f", l.Score), name, birth, gender, postal)
					}
				}
				t.line("")
				printResponders(t, resp.Responders)
			})
		},
	}
	q.add(cmd)
	f := cmd.Flags()
	f.StringVar(&d.Given, "given", "", "given name(s) (required)")
	f.StringVar(&d.Family, "family", "", "family name (required)")
	f.StringVar(&d.BirthDate, "birth-date", "", "birth date as YYYY-MM-DD (required)")
	f.StringVar(&d.Gender, "gender", "", "male, female, other or unknown (required)")
	f.StringVar(&d.Address.PostalCode, "postal-code", "", "postal code")
	f.StringVar(&d.Phone, "phone", "", "phone number")
	f.BoolVar(&tokens, "locator-tokens", true, "send the record-locator tokens of the demographics, when the config names a linkage key (linkage_key_file): the brokers then ask only the members that hold them")
	return cmd
}

func printResponders(t *table, rs []*qhinv1.ResponderStatus) {
	t.row("MEMBER", "STATUS", "LATENCY", "DETAIL")
	for _, r := range rs {
		t.row(r.ParticipantId, strings.TrimPrefix(r.Status.String(), "RESPONDER_STATE_"),
			r.Latency.AsDuration().Round(100*time.Microsecond), r.Detail)
	}
}

func parseDate(flag, s string) (*timestamppb.Timestamp, error) {
	if s == "" {
		return nil, nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return nil, fmt.Errorf("--%s: want YYYY-MM-DD", flag)
	}
	return timestamppb.New(t), nil
}

func newQueryDocumentsCmd(g *globals) *cobra.Command {
	var (
		q            queryFlags
		links, types []string
		since, until string
	)
	cmd := &cobra.Command{
		Use:     "documents",
		Short:   "List the documents members hold for linked patients (document query)",
		Example: `  qhinctl query documents --link p1/p1-000042 --link p2/p2-000107 --purpose T-TRTMNT`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &qhinv1.QueryDocumentsRequest{PurposeOfUse: q.purpose, Requester: q.requester(), TypeCodes: types,
				Emergency: q.emergency.on, EmergencyReason: q.emergency.reason}
			if len(links) == 0 {
				return errors.New("--link: at least one link is required (PARTICIPANT/PATIENT_ID as query patients printed it, or an opaque link)")
			}
			book, err := g.linkBook(q.as)
			if err != nil {
				return err
			}
			for _, l := range links {
				link, err := book.resolve("link", l)
				if err != nil {
					return err
				}
				req.Links = append(req.Links, &qhinv1.PatientLink{Link: link})
			}
			if req.Since, err = parseDate("since", since); err != nil {
				return err
			}
			if req.Until, err = parseDate("until", until); err != nil {
				return err
			}
			conn, err := g.participantConn(q.as)
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := g.callContext(cmd.Context())
			defer cancel()
			resp, err := conn.Gateway().QueryDocuments(ctx, req)
			if err != nil {
				return err
			}
			for _, d := range resp.Documents {
				book.add(d.SourceParticipantId+"/"+d.Id, d.Link)
			}
			if err := book.save(); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "qhinctl: could not remember the links for the next command: %v\n", err)
			}
			return g.print(cmd.OutOrStdout(), resp, func(t *table) {
				t.line("query %s: %d document(s)", resp.QueryId, len(resp.Documents))
				t.row("LINK", "CREATED", "TYPE", "TITLE", "SIZE", "CONTENT TYPE")
				for _, d := range resp.Documents {
					t.row(d.SourceParticipantId+"/"+d.Id, d.Created.AsTime().Format(time.DateOnly), d.TypeCode, d.Title, d.Size, d.ContentType)
				}
				t.line("")
				printResponders(t, resp.Responders)
			})
		},
	}
	q.add(cmd)
	cmd.Flags().StringArrayVar(&links, "link", nil, "patient link PARTICIPANT/PATIENT_ID (repeatable; required)")
	cmd.Flags().StringArrayVar(&types, "type", nil, "only documents of this LOINC type code (repeatable)")
	cmd.Flags().StringVar(&since, "since", "", "only documents created on or after YYYY-MM-DD")
	cmd.Flags().StringVar(&until, "until", "", "only documents created before YYYY-MM-DD")
	return cmd
}

func newRetrieveCmd(g *globals) *cobra.Command {
	var (
		q         queryFlags
		link, out string
	)
	cmd := &cobra.Command{
		Use:     "retrieve",
		Short:   "Retrieve one document and check its SHA-256",
		Example: `  qhinctl retrieve --link p1/p1-000042-doc-1 --out note.json --purpose T-TRTMNT`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			book, err := g.linkBook(q.as)
			if err != nil {
				return err
			}
			opaque, err := book.resolve("link", link)
			if err != nil {
				return err
			}
			if out == "" {
				return errors.New("--out: a file to write the document to is required")
			}
			conn, err := g.participantConn(q.as)
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := g.callContext(cmd.Context())
			defer cancel()
			stream, err := conn.Gateway().RetrieveDocument(ctx, &qhinv1.RetrieveDocumentRequest{
				PurposeOfUse: q.purpose, Requester: q.requester(), Emergency: q.emergency.on, EmergencyReason: q.emergency.reason,
				Link: &qhinv1.DocumentLink{Link: opaque},
			})
			if err != nil {
				return err
			}
			tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			defer tmp.Close()
			var header *qhinv1.DocumentMetadata
			h := sha256.New()
			var n int64
			for {
				msg, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					return err
				}
				if hd := msg.GetHeader(); hd != nil {
					header = hd
					continue
				}
				c := msg.GetChunk()
				h.Write(c)
				if _, err := tmp.Write(c); err != nil {
					return err
				}
				n += int64(len(c))
			}
			if header == nil {
				return errors.New("the broker sent no document header")
			}
			sum := hex.EncodeToString(h.Sum(nil))
			if sum != header.Sha256 || n != header.Size {
				return fmt.Errorf("document %s/%s is corrupt: got %d bytes with sha256 %s, header says %d bytes with %s", header.SourceParticipantId, header.Id, n, sum, header.Size, header.Sha256)
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), out); err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), header, func(t *table) {
				t.line("wrote %s: %d bytes, %s, %q", out, n, header.ContentType, header.Title)
				t.line("sha256 %s verified", sum)
			})
		},
	}
	q.add(cmd)
	cmd.Flags().StringVar(&link, "link", "", "document link PARTICIPANT/DOCUMENT_ID (required)")
	cmd.Flags().StringVar(&out, "out", "", "file to write the document to (required)")
	return cmd
}
