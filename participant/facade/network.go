package facade

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openqhin/openqhin/participant/fhir"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// patientParams are the Patient search parameters the facade understands.
var patientParams = []string{"family", "given", "birthdate", "gender", "address-postalcode", "address-city",
	"address-state", "phone", "identifier", "_count"}

// demographicsOf reads a Patient search's parameters.
func demographicsOf(q *search) (*qhinv1.Demographics, error) {
	d := &qhinv1.Demographics{
		Family:    q.get("family"),
		Given:     strings.Join(q.all("given"), " "),
		Gender:    q.get("gender"),
		BirthDate: q.get("birthdate"),
		Phone:     q.get("phone"),
	}
	if b, ok := strings.CutPrefix(d.BirthDate, "eq"); ok {
		d.BirthDate = b
	} else if len(d.BirthDate) > 2 && d.BirthDate[0] >= 'a' && d.BirthDate[0] <= 'z' {
		return nil, badRequest("birthdate", "birthdate: only an exact date (YYYY-MM-DD, or eqYYYY-MM-DD) finds a person")
	}
	if pc, city, st := q.get("address-postalcode"), q.get("address-city"), q.get("address-state"); pc != "" || city != "" || st != "" {
		d.Address = &qhinv1.Address{PostalCode: pc, City: city, State: st}
	}
	for _, t := range q.tokens("identifier") {
		d.Identifiers = append(d.Identifiers, &qhinv1.Identifier{System: t.system, Value: t.code})
	}
	return d, nil
}

// matchRequest reads a Patient/$match body: Parameters with a Patient
// (resource), onlyCertainMatches and count; a bare Patient is taken too.
func matchRequest(body []byte) (d *qhinv1.Demographics, onlyCertain bool, count int, err error) {
	var head struct {
		ResourceType string `json:"resourceType"`
		Parameter    []struct {
			Name         string          `json:"name"`
			Resource     json.RawMessage `json:"resource"`
			ValueBoolean *bool           `json:"valueBoolean"`
			ValueInteger *int            `json:"valueInteger"`
		} `json:"parameter"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return nil, false, 0, badRequest("", "the body is not valid JSON (a FHIR Parameters resource)")
	}
	var patient json.RawMessage
	switch head.ResourceType {
	case "Patient":
		patient = body
	case "Parameters":
		for _, p := range head.Parameter {
			switch p.Name {
			case "resource":
				patient = p.Resource
			case "onlyCertainMatches":
				if p.ValueBoolean == nil {
					return nil, false, 0, badRequest("Parameters.parameter", "onlyCertainMatches: must be a valueBoolean")
				}
				onlyCertain = *p.ValueBoolean
			case "count":
				if p.ValueInteger == nil || *p.ValueInteger < 1 || *p.ValueInteger > MaxCount {
					return nil, false, 0, badRequest("Parameters.parameter", fmt.Sprintf("count: must be a valueInteger from 1 to %d", MaxCount))
				}
				count = *p.ValueInteger
			}
		}
	default:
		return nil, false, 0, badRequest("resourceType", "resourceType: the body of $match must be a Parameters resource (or a Patient)")
	}
	if len(patient) == 0 {
		return nil, false, 0, badRequest("Parameters.parameter", "resource: required: the Patient to match")
	}
	if _, d, err = fhir.ParsePatient(patient); err != nil {
		return nil, false, 0, badRequest("Parameters.parameter.resource", "resource: "+err.Error())
	}
	return d, onlyCertain, count, nil
}

func (s *Server) searchPatients(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := needNetwork(c, "Patient"); err != nil {
		return err
	}
	q, err := newSearch(r, patientParams...)
	if err != nil {
		return err
	}
	d, err := demographicsOf(q)
	if err != nil {
		return err
	}
	count, err := q.count(DefaultCount)
	if err != nil {
		return err
	}
	return s.discover(w, r, c, d, false, count, q.selfURL(s.base(r), "/Patient"))
}

func (s *Server) matchPatients(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := needNetwork(c, "Patient"); err != nil {
		return err
	}
	body, _, err := s.readBody(w, r, fhirTypes...)
	if err != nil {
		return err
	}
	d, onlyCertain, count, err := matchRequest(body)
	if err != nil {
		return err
	}
	if count == 0 {
		count = DefaultCount
	}
	return s.discover(w, r, c, d, onlyCertain, count, s.base(r)+"/Patient/$match")
}

// discover asks the network for the person d describes and answers with a
// searchset of one Patient per merged person.
func (s *Server) discover(w http.ResponseWriter, r *http.Request, c *caller, d *qhinv1.Demographics, onlyCertain bool, count int, self string) error {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.QueryTimeout)
	defer cancel()
	resp, err := s.cfg.Gateway.DiscoverPatients(ctx, &qhinv1.DiscoverPatientsRequest{PurposeOfUse: c.purpose, Requester: requesterOf(c), Demographics: d})
	if err != nil {
		return networkProblem(ctx, err)
	}
	issues, err := memberIssues(resp.Responders)
	if err != nil {
		return err
	}
	persons := slices.Clone(resp.Persons)
	slices.SortStableFunc(persons, func(a, b *qhinv1.Person) int { return cmp.Compare(bestScore(b), bestScore(a)) })
	base := s.base(r)
	b := newBundle("searchset")
	b.Link = []bundleLink{{Relation: "self", URL: self}}
	for _, p := range persons {
		grade := gradeOf(p)
		if onlyCertain && grade != "certain" {
			continue
		}
		if len(b.Entry) == count {
			break
		}
		h := s.handles.add(&handle{kind: kindPerson, owner: c.owner(), links: p.Links, score: bestScore(p)})
		pt := patientOf(h.id, p.Demographics)
		pt.Identifier = nil // a person's own identifiers are one member's; the links name them all
		for _, l := range p.Links {
			pt.Identifier = append(pt.Identifier, identifier{Use: "secondary", System: s.linkSystem(l.ParticipantId), Value: linkValue(l)})
		}
		s.personCache(h, pt)
		score := h.score
		b.Entry = append(b.Entry, bundleEntry{
			FullURL: base + "/Patient/" + h.id, Resource: pt,
			Search: &entrySearch{Mode: "match", Score: &score, Extension: []extension{{URL: matchGradeURL, ValueCode: grade}}},
		})
	}
	total := len(b.Entry)
	b.Total = &total
	if len(issues) > 0 {
		b.Entry = append(b.Entry, bundleEntry{FullURL: "urn:uuid:" + uuidOf(newID()), Resource: outcome(issues...), Search: &entrySearch{Mode: "outcome"}})
	}
	s.log.InfoContext(ctx, "fhir discover", "query_id", resp.QueryId, "purpose", c.purpose, "persons", total, "members_missing", len(issues))
	writeJSON(w, http.StatusOK, b)
	return nil
}

// personCache keeps the rendered Patient of a person handle, for a read.
func (s *Server) personCache(h *handle, p *patient) {
	b, _ := json.Marshal(p)
	h.rendered = b
}

// readPerson answers GET /Patient/ID with a person the network found.
func (s *Server) readPerson(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := needNetwork(c, "Patient"); err != nil {
		return err
	}
	h, p := s.handles.get(r.PathValue("id"), kindPerson, c.owner(), "Patient.id")
	if p != nil {
		return p
	}
	w.Header().Set("Content-Type", fhirJSON)
	w.Write(h.rendered)
	return nil
}

// memberIssues lists the members that did not answer a query as warnings,
// or returns a 504 problem when every member asked timed out.
func memberIssues(rs []*qhinv1.ResponderStatus) ([]issue, error) {
	var issues []issue
	asked, timedOut := 0, 0
	for _, st := range rs {
		switch st.Status {
		case qhinv1.ResponderState_RESPONDER_STATE_OK, qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH:
			asked++
			continue
		case qhinv1.ResponderState_RESPONDER_STATE_SKIPPED:
			continue
		case qhinv1.ResponderState_RESPONDER_STATE_TIMEOUT:
			timedOut++
		}
		asked++
		state := strings.ToLower(strings.TrimPrefix(st.Status.String(), "RESPONDER_STATE_"))
		msg := fmt.Sprintf("member %s did not answer: %s", st.ParticipantId, state)
		if st.Detail != "" {
			msg += " (" + st.Detail + ")"
		}
		code := "incomplete"
		if st.Status == qhinv1.ResponderState_RESPONDER_STATE_TIMEOUT {
			code = "timeout"
		}
		issues = append(issues, issue{Severity: "warning", Code: code, Diagnostics: msg})
	}
	if asked > 0 && timedOut == asked {
		return nil, &problem{status: http.StatusGatewayTimeout, code: "timeout", msg: fmt.Sprintf("none of the %d member(s) asked answered in time", asked)}
	}
	return issues, nil
}

// bestScore is a person's best link score.
func bestScore(p *qhinv1.Person) float64 {
	best := 0.0
	for _, l := range p.Links {
		best = max(best, l.Score)
	}
	return best
}

// gradeOf grades a person for the match-grade extension: certain when a
// member's matcher decided it is the person, probable from a score of 0.8,
// possible below.
func gradeOf(p *qhinv1.Person) string {
	for _, l := range p.Links {
		if l.GetExplanation().GetDecision() == qhinv1.MatchDecision_MATCH_DECISION_MATCH {
			return "certain"
		}
	}
	if bestScore(p) >= 0.8 {
		return "probable"
	}
	return "possible"
}

// gradeOfCandidate grades one member's candidate the same way.
func gradeOfCandidate(c *qhinv1.Candidate) string {
	return gradeOf(&qhinv1.Person{Links: []*qhinv1.PersonLink{{Score: c.Score, Explanation: c.Explanation}}})
}

// linkSystem is the identifier system of a member's links.
func (s *Server) linkSystem(member string) string {
	if s.cfg.TrustDomain == "" {
		return "urn:openqhin:participant:" + member
	}
	return "spiffe://" + s.cfg.TrustDomain + "/participant/" + member
}

// linkValue is how a member's link appears to the EHR. The facade never
// reads it back: queries use the links the network returned, held under
// the person's id.
func linkValue(l *qhinv1.PersonLink) string { return l.ParticipantId + "/" + l.PatientId }

// patientLinks are a person's links as a document query takes them.
func patientLinks(ls []*qhinv1.PersonLink) []*qhinv1.PatientLink {
	out := make([]*qhinv1.PatientLink, len(ls))
	for i, l := range ls {
		out[i] = &qhinv1.PatientLink{ParticipantId: l.ParticipantId, PatientId: l.PatientId, Link: l.Link}
	}
	return out
}

// documentLink is a listed document's link as a retrieval takes it.
func documentLink(m *qhinv1.DocumentMetadata) *qhinv1.DocumentLink {
	holder := m.SourceParticipantId
	if holder == "" {
		holder = m.GetPatient().GetParticipantId()
	}
	return &qhinv1.DocumentLink{ParticipantId: holder, DocumentId: m.Id, Link: m.Link}
}

// uuidOf formats 32 base32 characters of a random id as a UUID-shaped URN
// tail (only its form matters: a fullUrl for an OperationOutcome entry).
func uuidOf(id string) string {
	h := fmt.Sprintf("%x", []byte(id))[:32]
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// documentParams are the DocumentReference search parameters understood.
var documentParams = []string{"patient", "subject", "type", "date", "category", "_count", "_getpages", "_offset"}

func (s *Server) searchDocuments(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := needNetwork(c, "DocumentReference"); err != nil {
		return err
	}
	q, err := newSearch(r, documentParams...)
	if err != nil {
		return err
	}
	count, err := q.count(DefaultCount)
	if err != nil {
		return err
	}
	if id := q.get("_getpages"); id != "" {
		h, p := s.handles.get(id, kindPage, c.owner(), "_getpages")
		if p != nil {
			return p
		}
		offset, err := offsetOf(q)
		if err != nil {
			return err
		}
		s.writePage(w, r, h, offset, count)
		return nil
	}
	ref := q.get("patient")
	if ref == "" {
		ref = q.get("subject")
	}
	if ref == "" {
		return badRequest("patient", "patient: required: the id of a Patient this server found (Patient/$match or a Patient search)")
	}
	id := strings.TrimPrefix(ref, "Patient/")
	person, p := s.handles.get(id, kindPerson, c.owner(), "patient")
	if p != nil {
		return p
	}
	f, none, err := q.documentFilter()
	if err != nil {
		return err
	}
	pg := &page{self: q.selfURL(s.base(r), "/DocumentReference")}
	if !none {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.QueryTimeout)
		defer cancel()
		req := &qhinv1.QueryDocumentsRequest{PurposeOfUse: c.purpose, Requester: requesterOf(c), Links: patientLinks(person.links), TypeCodes: f.TypeCodes}
		if !f.Since.IsZero() {
			req.Since = timestamppb.New(f.Since)
		}
		if !f.Until.IsZero() {
			req.Until = timestamppb.New(f.Until)
		}
		resp, err := s.cfg.Gateway.QueryDocuments(ctx, req)
		if err != nil {
			return networkProblem(ctx, err)
		}
		if pg.issue, err = memberIssues(resp.Responders); err != nil {
			return err
		}
		for _, m := range resp.Documents {
			pg.docs = append(pg.docs, s.handles.add(&handle{kind: kindDocument, owner: c.owner(), doc: m, subject: "Patient/" + person.id}))
		}
		s.log.InfoContext(ctx, "fhir documents", "query_id", resp.QueryId, "purpose", c.purpose, "documents", len(pg.docs), "members_missing", len(pg.issue))
	}
	h := s.handles.add(&handle{kind: kindPage, owner: c.owner(), page: pg})
	s.writePage(w, r, h, 0, count)
	return nil
}

func offsetOf(q *search) (int, error) {
	v := q.get("_offset")
	if v == "" {
		return 0, nil
	}
	var n int
	if _, err := fmt.Sscan(v, &n); err != nil || n < 0 {
		return 0, badRequest("_offset", "_offset: must be a whole number from 0")
	}
	return n, nil
}

// writePage answers with documents [offset, offset+count) of a search.
func (s *Server) writePage(w http.ResponseWriter, r *http.Request, h *handle, offset, count int) {
	base := s.base(r)
	pg := h.page
	total := len(pg.docs)
	b := newBundle("searchset")
	b.Total = &total
	pageURL := func(off int) string {
		return fmt.Sprintf("%s/DocumentReference?_getpages=%s&_offset=%d&_count=%d", base, h.id, off, count)
	}
	if offset == 0 {
		b.Link = append(b.Link, bundleLink{Relation: "self", URL: pg.self})
	} else {
		b.Link = append(b.Link, bundleLink{Relation: "self", URL: pageURL(offset)})
	}
	b.Link = append(b.Link, bundleLink{Relation: "first", URL: pageURL(0)})
	if offset > 0 {
		b.Link = append(b.Link, bundleLink{Relation: "previous", URL: pageURL(max(0, offset-count))})
	}
	if offset+count < total {
		b.Link = append(b.Link, bundleLink{Relation: "next", URL: pageURL(offset + count)})
	}
	if total > 0 {
		b.Link = append(b.Link, bundleLink{Relation: "last", URL: pageURL((total - 1) / count * count)})
	}
	for i := offset; i < min(total, offset+count); i++ {
		d := pg.docs[i]
		b.Entry = append(b.Entry, bundleEntry{
			FullURL:  base + "/DocumentReference/" + d.id,
			Resource: documentOf(d.id, d.doc, d.subject, base+"/Binary/"+d.id),
			Search:   &entrySearch{Mode: "match"},
		})
	}
	if len(pg.issue) > 0 {
		b.Entry = append(b.Entry, bundleEntry{FullURL: "urn:uuid:" + uuidOf(newID()), Resource: outcome(pg.issue...), Search: &entrySearch{Mode: "outcome"}})
	}
	writeJSON(w, http.StatusOK, b)
}

func (s *Server) readDocument(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := needNetwork(c, "DocumentReference"); err != nil {
		return err
	}
	h, p := s.handles.get(r.PathValue("id"), kindDocument, c.owner(), "DocumentReference.id")
	if p != nil {
		return p
	}
	base := s.base(r)
	writeJSON(w, http.StatusOK, documentOf(h.id, h.doc, h.subject, base+"/Binary/"+h.id))
	return nil
}

// readBinary streams a document from the member that holds it, through the
// network, as its own bytes or wrapped in a FHIR Binary.
func (s *Server) readBinary(w http.ResponseWriter, r *http.Request, c *caller) error {
	if err := needNetwork(c, "Binary"); err != nil {
		return err
	}
	h, p := s.handles.get(r.PathValue("id"), kindDocument, c.owner(), "Binary.id")
	if p != nil {
		return p
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RetrieveTimeout)
	defer cancel()
	in, err := s.cfg.Gateway.RetrieveDocument(ctx, &qhinv1.RetrieveDocumentRequest{PurposeOfUse: c.purpose, Requester: requesterOf(c), Link: documentLink(h.doc)})
	if err != nil {
		return networkProblem(ctx, err)
	}
	msg, err := in.Recv()
	if err != nil {
		return networkProblem(ctx, err)
	}
	header := msg.GetHeader()
	if header == nil {
		return &problem{status: http.StatusBadGateway, code: "exception", msg: "the network sent content before the document's header"}
	}
	out, err := startBinary(w, r, h.id, header)
	for err == nil {
		msg, rerr := in.Recv()
		if errors.Is(rerr, io.EOF) {
			err = out.finish()
			break
		}
		if rerr != nil {
			err = networkProblem(ctx, rerr)
			break
		}
		err = out.write(msg.GetChunk())
	}
	if err != nil {
		// The status line is out: cut the response short, so that the
		// EHR sees a body shorter than its Content-Length.
		s.log.WarnContext(ctx, "fhir binary cut short", "document", header.Id, "bytes", out.n, "error", err.Error())
		panic(http.ErrAbortHandler)
	}
	n := out.n
	s.log.InfoContext(ctx, "fhir binary", "purpose", c.purpose, "document", header.Id, "bytes", n)
	return nil
}

// wantsFHIR reports whether the request asks for a Binary resource rather
// than the document's own bytes.
func wantsFHIR(r *http.Request) bool {
	if f := r.URL.Query().Get("_format"); f == "json" || strings.Contains(f, "fhir+json") {
		return true
	}
	for _, a := range r.Header.Values("Accept") {
		for _, part := range strings.Split(a, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			switch strings.TrimSpace(mt) {
			case "application/fhir+json", "application/json+fhir", "application/json":
				return true
			}
		}
	}
	return false
}

// binaryOut writes a document: its bytes with its content type, or a FHIR
// Binary whose data is the content in base64, encoded as it streams. Either
// way Content-Length is exact and nothing is held beyond a chunk.
type binaryOut struct {
	m      *qhinv1.DocumentMetadata
	out    io.Writer
	enc    *base64Writer
	w      http.ResponseWriter
	suffix []byte
	n      int64
}

// startBinary writes the status line and headers, and the start of a
// Binary resource when the request asks for one.
func startBinary(w http.ResponseWriter, r *http.Request, id string, m *qhinv1.DocumentMetadata) (*binaryOut, error) {
	ct := m.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	b := &binaryOut{m: m, out: w, w: w}
	var prefix []byte
	if wantsFHIR(r) {
		ctJSON, _ := json.Marshal(ct)
		prefix = fmt.Appendf(nil, `{"resourceType":"Binary","id":"%s","contentType":%s`, id, ctJSON)
		if m.Size > 0 {
			prefix = append(prefix, `,"data":"`...)
			b.suffix = []byte(`"}`)
		} else {
			b.suffix = []byte(`}`)
		}
		w.Header().Set("Content-Type", fhirJSON)
		w.Header().Set("Content-Length", fmt.Sprint(int64(len(prefix))+encodedLen(m.Size)+int64(len(b.suffix))))
	} else {
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Content-Length", fmt.Sprint(m.Size))
		w.Header().Set("Content-Disposition", "attachment")
	}
	if m.Sha256 != "" {
		w.Header().Set("ETag", `"sha256-`+m.Sha256+`"`)
	}
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(prefix); err != nil {
		return b, err
	}
	if prefix != nil && m.Size > 0 {
		b.enc = newBase64Writer(w)
		b.out = b.enc
	}
	return b, nil
}

// write passes one chunk on.
func (b *binaryOut) write(chunk []byte) error {
	if b.n+int64(len(chunk)) > b.m.Size {
		return errors.New("the document is longer than its header says")
	}
	if _, err := b.out.Write(chunk); err != nil {
		return err
	}
	b.n += int64(len(chunk))
	return nil
}

// finish checks the length and closes the Binary.
func (b *binaryOut) finish() error {
	if b.n != b.m.Size {
		return errors.New("the document is shorter than its header says")
	}
	if b.enc != nil {
		if err := b.enc.Close(); err != nil {
			return err
		}
	}
	_, err := b.w.Write(b.suffix)
	return err
}

// errStop ends a StreamDocument after its header.
var errStop = errors.New("stop after the header")

// localDocument reads one local document's metadata.
func localDocument(ctx context.Context, l Local, id string) (*qhinv1.DocumentMetadata, error) {
	var m *qhinv1.DocumentMetadata
	err := l.Records().StreamDocument(ctx, id, func(h *qhinv1.DocumentMetadata) error { m = h; return errStop }, func([]byte) error { return nil })
	if errors.Is(err, errStop) {
		return m, nil
	}
	if err == nil {
		return m, nil
	}
	return nil, err
}
