package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// personFlags name a person by demographics, for an operator acting on the
// patient's request: the brokers find the person's records at the members
// (their matchers' certain matches) and act on each.
type personFlags struct {
	given, family, birthDate, gender string
	tokens                           bool
}

func (p *personFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&p.given, "given", "", "the person's given name(s): find their records at every member, as an operator (with --family, --birth-date, --gender; no --as or --patient)")
	f.StringVar(&p.family, "family", "", "the person's family name")
	f.StringVar(&p.birthDate, "birth-date", "", "the person's birth date, YYYY-MM-DD")
	f.StringVar(&p.gender, "gender", "", "male, female, other or unknown")
	f.BoolVar(&p.tokens, "locator-tokens", false, "with --given …: send the record-locator tokens of the demographics (the config's linkage key), so that only the members the locator lists are asked; off by default, since a record whose tokens are not yet published would be missed")
}

// set reports whether the person is named by demographics.
func (p *personFlags) set() bool {
	return p.given != "" || p.family != "" || p.birthDate != "" || p.gender != ""
}

// check refuses a call that names the patient both ways, or neither.
func (p *personFlags) check(c *consentFlags) error {
	switch {
	case p.set() && (c.as != "" || c.participant != "" || c.patient != ""):
		return errors.New("name the patient either by --patient (with --as or --participant) or by demographics (--given --family --birth-date --gender, as an operator), not both")
	case !p.set() && c.patient == "":
		return errors.New("--patient is required (or name the person by --given --family --birth-date --gender, as an operator)")
	}
	return nil
}

// lookup is the request's person, with locator tokens when the config
// names a linkage key.
func (p *personFlags) lookup(g *globals, cfg *client.Config) (*qhinv1.PersonLookup, error) {
	d := &qhinv1.Demographics{Given: p.given, Family: p.family, BirthDate: p.birthDate, Gender: p.gender}
	out := &qhinv1.PersonLookup{Demographics: d}
	if !p.tokens {
		return out, nil
	}
	key, err := g.linkageKey(cfg)
	if err != nil || key == nil {
		return out, err
	}
	if t := key.QueryTokens(d); t != nil {
		out.LocatorTokens = []*qhinv1.LocatorTokens{t}
	}
	return out, nil
}

// operatorConsent dials the brokers as the operator and builds the lookup.
func (p *personFlags) operatorConsent(g *globals) (qhinv1.ConsentClient, *client.Conn, pki.Source, *qhinv1.PersonLookup, error) {
	cfg, src, err := g.operator()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	person, err := p.lookup(g, cfg)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	conn, err := client.Dial(cfg.Brokers, src, nil)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return qhinv1.NewConsentClient(conn.ClientConn), conn, src, person, nil
}

// printLookup shows which members' records were covered: member ids, local
// ids and counts, never demographics.
func printLookup(t *table, l *qhinv1.RecordLookup) {
	t.row("MEMBER", "STATUS", "RECORDS", "POSSIBLE MATCHES (NOT COVERED)", "DETAIL")
	for _, m := range l.GetMembers() {
		recs := "-"
		if len(m.PatientIds) > 0 {
			recs = strings.Join(m.PatientIds, ", ")
		}
		t.row(m.ParticipantId, strings.TrimPrefix(m.State.String(), "RESPONDER_STATE_"), recs, m.Possible, m.Detail)
	}
}

func countRecords(l *qhinv1.RecordLookup) int {
	n := 0
	for _, m := range l.GetMembers() {
		n += len(m.PatientIds)
	}
	return n
}

// incomplete is the error of a lookup some members did not answer.
func incomplete(what string, l *qhinv1.RecordLookup) error {
	if len(l.GetUnanswered()) == 0 {
		return nil
	}
	return fmt.Errorf("%s is incomplete: member(s) %s did not answer; their records of the person, if any, are not covered: run it again when they answer",
		what, strings.Join(l.Unanswered, ", "))
}

// consentByPerson runs a set or revoke by demographics and prints it.
func consentByPerson(cmd *cobra.Command, g *globals, p *personFlags, verb, noun string,
	call func(ctx context.Context, cl qhinv1.ConsentClient, person *qhinv1.PersonLookup) (*qhinv1.ConsentByDemographicsResponse, error)) error {
	cl, conn, _, person, err := p.operatorConsent(g)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := g.callContext(cmd.Context())
	defer cancel()
	resp, err := call(ctx, cl, person)
	if err != nil {
		return err
	}
	perr := g.print(cmd.OutOrStdout(), resp, func(t *table) {
		t.line("%s for %d record(s) of the person", verb, len(resp.Directives))
		printLookup(t, resp.Lookup)
	})
	if perr != nil {
		return perr
	}
	return incomplete(noun, resp.Lookup)
}

// personDisclosures is the accounting of a person named by demographics:
// the lookup, then every broker's ledger for each record found.
func personDisclosures(cmd *cobra.Command, g *globals, p *personFlags, since string, limit uint32) error {
	cl, conn, src, person, err := p.operatorConsent(g)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := g.callContext(cmd.Context())
	defer cancel()
	found, err := cl.FindPatientRecords(ctx, &qhinv1.FindPatientRecordsRequest{Person: person})
	if err != nil {
		return err
	}
	sinceTS, err := parseDate("since", since)
	if err != nil {
		return err
	}
	var reqs []*qhinv1.ListDisclosuresRequest
	for _, m := range found.Lookup.GetMembers() {
		for _, id := range m.PatientIds {
			reqs = append(reqs, &qhinv1.ListDisclosuresRequest{ParticipantId: m.ParticipantId, PatientId: id, Since: sinceTS, Limit: limit})
		}
	}
	var (
		out    []*qhinv1.Disclosure
		failed []string
	)
	if len(reqs) > 0 {
		if out, failed, err = client.Disclosures(ctx, conn, src, reqs); err != nil {
			return err
		}
	}
	perr := g.print(cmd.OutOrStdout(), &qhinv1.ListDisclosuresResponse{Disclosures: out}, func(t *table) {
		t.line("%d disclosure(s) of %d record(s) of the person", len(out), countRecords(found.Lookup))
		t.row("TIME", "RECORD", "TO", "END USER", "PURPOSE", "ACTION", "EMERGENCY", "BROKER")
		for _, d := range out {
			t.row(d.Time.AsTime().Format(time.RFC3339), d.RecordParticipantId+"/"+d.RecordPatientId, d.InitiatorParticipantId,
				endUser(d.EndUser), d.PurposeOfUse, d.Action, emergencyCol(d), d.Broker)
		}
		t.line("")
		printLookup(t, found.Lookup)
	})
	if perr != nil {
		return perr
	}
	var why []string
	if len(found.Lookup.GetUnanswered()) > 0 {
		why = append(why, "member(s) "+strings.Join(found.Lookup.Unanswered, ", ")+" did not answer the lookup")
	}
	why = append(why, failed...)
	if len(why) > 0 {
		return fmt.Errorf("the accounting is incomplete: %s", strings.Join(why, "; "))
	}
	return nil
}

func endUser(r *qhinv1.Requester) string {
	user := r.GetId()
	if n := r.GetName(); n != "" {
		user = n + " (" + user + ")"
	}
	return user
}

func emergencyCol(d *qhinv1.Disclosure) string {
	if d.Emergency {
		return "yes: " + d.EmergencyReason
	}
	return "-"
}
