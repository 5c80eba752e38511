// Package upstream answers the network from an existing FHIR R4 server
// instead of a participant's own store: an HIE that already runs one joins
// without copying its records. Discovery is Patient/$match (or, where the
// server has no $match, Patient searches by family name or given name with
// the birth date), scored by the participant's own matcher; a document query
// is a DocumentReference search; a retrieval reads the document's Binary
// (or its inline data).
//
// Every call has a deadline and every answer a size cap. A retrieved
// document is spooled to a temporary file while its SHA-256 is computed
// (the network checks every document against its digest before the first
// byte), then streamed from there in chunks: memory stays flat. Errors never
// carry the server's URL with its query (it holds the demographics searched
// for) nor its answer's text.
package upstream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openqhin/openqhin/participant"
	"github.com/openqhin/openqhin/participant/fhir"
	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Defaults of Config's zero fields.
const (
	DefaultTimeout          = 10 * time.Second
	DefaultMaxResponseBytes = 16 << 20
	DefaultMaxDocumentBytes = 1 << 30
	// maxPages bounds the pages of one DocumentReference search.
	maxPages = 20
)

// Config describes the upstream server.
type Config struct {
	// URL is the server's FHIR base, e.g. https://fhir.example.org/r4.
	URL string
	// Client makes the calls (its transport carries the TLS trust);
	// http.DefaultClient's transport when nil.
	Client *http.Client
	// Token, when set, is sent as a bearer token.
	Token string
	// Timeout bounds each search and the start of each retrieval;
	// DefaultTimeout when zero. A retrieval's transfer is bounded by the
	// network's own deadline.
	Timeout time.Duration
	// MaxResponseBytes caps a search's answer, MaxDocumentBytes a
	// document.
	MaxResponseBytes, MaxDocumentBytes int64
	// SpoolDir holds documents while their digest is computed; the system
	// temporary directory when empty.
	SpoolDir string
}

// Records answers from an upstream FHIR server; it implements
// participant.Records.
type Records struct {
	cfg  Config
	base *url.URL
}

var _ participant.Records = (*Records)(nil)

// New checks the configuration.
func New(cfg Config) (*Records, error) {
	u, err := url.Parse(strings.TrimRight(cfg.URL, "/"))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("upstream: the URL must be an http(s) FHIR base URL")
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if cfg.MaxDocumentBytes <= 0 {
		cfg.MaxDocumentBytes = DefaultMaxDocumentBytes
	}
	return &Records{cfg: cfg, base: u}, nil
}

// errStatus is an upstream answer with an HTTP error status.
type errStatus struct{ code int }

func (e *errStatus) Error() string { return fmt.Sprintf("upstream answered HTTP %d", e.code) }

// call makes one request and returns the open answer for a 2xx status.
// what names the call in errors, which never hold the URL.
func (r *Records) call(ctx context.Context, method, u, accept, what string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: bad request", what)
	}
	req.Header.Set("Accept", accept)
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	if r.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+r.cfg.Token)
	}
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("upstream %s: %w: %w", what, participant.ErrUnreachable, ctx.Err())
		}
		return nil, fmt.Errorf("upstream %s: %w", what, participant.ErrUnreachable)
	}
	if resp.StatusCode/100 != 2 {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
			return nil, fmt.Errorf("upstream %s: %w", what, store.ErrNotFound)
		}
		return nil, fmt.Errorf("upstream %s: %w", what, &errStatus{resp.StatusCode})
	}
	return resp, nil
}

// getJSON calls and decodes a JSON answer of at most MaxResponseBytes.
func (r *Records) getJSON(ctx context.Context, method, u, what string, body []byte, v any) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	resp, err := r.call(ctx, method, u, "application/fhir+json", what, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, r.cfg.MaxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("upstream %s: %w", what, participant.ErrUnreachable)
	}
	if int64(len(b)) > r.cfg.MaxResponseBytes {
		return fmt.Errorf("upstream %s: the answer is larger than %d bytes", what, r.cfg.MaxResponseBytes)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("upstream %s: the answer is not FHIR JSON", what)
	}
	return nil
}

// ref resolves a path or URL against the base; only URLs of the upstream
// server itself are followed.
func (r *Records) ref(p string) (string, bool) {
	u, err := r.base.Parse(p)
	if err != nil || u.Scheme != r.base.Scheme || u.Host != r.base.Host {
		return "", false
	}
	if !u.IsAbs() || !strings.HasPrefix(p, "http") {
		u, err = url.Parse(r.base.String() + "/" + strings.TrimPrefix(p, "/"))
		if err != nil {
			return "", false
		}
	}
	return u.String(), true
}

type searchset struct {
	ResourceType string `json:"resourceType"`
	Link         []struct {
		Relation string `json:"relation"`
		URL      string `json:"url"`
	} `json:"link"`
	Entry []struct {
		Resource json.RawMessage `json:"resource"`
	} `json:"entry"`
}

func (b *searchset) next() string {
	for _, l := range b.Link {
		if l.Relation == "next" {
			return l.URL
		}
	}
	return ""
}

// Discover implements participant.Records.
func (r *Records) Discover(ctx context.Context, d *qhinv1.Demographics, threshold float64, limit int) ([]*qhinv1.Candidate, error) {
	found := map[string]*qhinv1.Demographics{}
	collect := func(b *searchset) {
		for _, e := range b.Entry {
			id, pd, err := fhir.ParsePatient(e.Resource)
			if err == nil && fhir.IsID(id) {
				found[id] = pd
			}
		}
	}
	var b searchset
	err := r.getJSON(ctx, http.MethodPost, r.base.String()+"/Patient/$match", "patient match", matchBody(d, limit), &b)
	var es *errStatus
	switch {
	case err == nil:
		collect(&b)
	case errors.Is(err, store.ErrNotFound) || (errors.As(err, &es) && (es.code == 405 || es.code == 501 || es.code == 400)):
		// No $match here: search by family name and by given name, each
		// with the birth date, so that a typo in one name still finds.
		for _, q := range searchQueries(d) {
			var b searchset
			if err := r.getJSON(ctx, http.MethodGet, r.base.String()+"/Patient?"+q.Encode(), "patient search", nil, &b); err != nil {
				return nil, err
			}
			collect(&b)
		}
	default:
		return nil, err
	}
	q := match.Normalize(d)
	m := match.DefaultModel()
	var out []*qhinv1.Candidate
	for id, pd := range found {
		pair := m.Compare(q, match.Normalize(pd))
		if s := pair.Score(); s >= threshold && s > 0 {
			out = append(out, &qhinv1.Candidate{PatientId: id, Demographics: pd, Score: s, Explanation: pair.Explanation()})
		}
	}
	slices.SortFunc(out, func(a, b *qhinv1.Candidate) int {
		if a.Score != b.Score {
			if a.Score > b.Score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.PatientId, b.PatientId)
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// matchBody is a $match request for d.
func matchBody(d *qhinv1.Demographics, count int) []byte {
	p := map[string]any{"resourceType": "Patient"}
	if d.Given != "" || d.Family != "" {
		n := map[string]any{}
		if d.Family != "" {
			n["family"] = d.Family
		}
		if g := strings.Fields(d.Given); len(g) > 0 {
			n["given"] = g
		}
		p["name"] = []any{n}
	}
	if d.BirthDate != "" {
		p["birthDate"] = d.BirthDate
	}
	if d.Gender != "" {
		p["gender"] = d.Gender
	}
	if d.Phone != "" {
		p["telecom"] = []any{map[string]any{"system": "phone", "value": d.Phone}}
	}
	if a := d.Address; a != nil {
		addr := map[string]any{}
		for k, v := range map[string]string{"city": a.City, "state": a.State, "postalCode": a.PostalCode, "country": a.Country} {
			if v != "" {
				addr[k] = v
			}
		}
		if len(a.Lines) > 0 {
			addr["line"] = a.Lines
		}
		if len(addr) > 0 {
			p["address"] = []any{addr}
		}
	}
	params := []any{map[string]any{"name": "resource", "resource": p}}
	if count > 0 {
		params = append(params, map[string]any{"name": "count", "valueInteger": count})
	}
	b, _ := json.Marshal(map[string]any{"resourceType": "Parameters", "parameter": params})
	return b
}

// searchQueries are the Patient searches made where $match is missing.
func searchQueries(d *qhinv1.Demographics) []url.Values {
	var qs []url.Values
	if d.Family != "" && d.BirthDate != "" {
		qs = append(qs, url.Values{"family": {d.Family}, "birthdate": {d.BirthDate}, "_count": {"50"}})
	}
	if g := strings.Fields(d.Given); len(g) > 0 && d.BirthDate != "" {
		qs = append(qs, url.Values{"given": {g[0]}, "birthdate": {d.BirthDate}, "_count": {"50"}})
	}
	if len(qs) == 0 && d.Family != "" {
		qs = append(qs, url.Values{"family": {d.Family}, "_count": {"50"}})
	}
	return qs
}

// Patient implements participant.Records.
func (r *Records) Patient(ctx context.Context, id string) (*qhinv1.Demographics, error) {
	if !fhir.IsID(id) {
		return nil, fmt.Errorf("patient: %w", store.ErrNotFound)
	}
	var raw json.RawMessage
	if err := r.getJSON(ctx, http.MethodGet, r.base.String()+"/Patient/"+id, "patient read", nil, &raw); err != nil {
		return nil, err
	}
	_, d, err := fhir.ParsePatient(raw)
	if err != nil {
		return nil, fmt.Errorf("upstream patient read: %w", err)
	}
	return d, nil
}

// docRef is what the network needs of a DocumentReference.
type docRef struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
	Meta         struct {
		Security []struct {
			Code string `json:"code"`
		} `json:"security"`
	} `json:"meta"`
	SecurityLabel []struct {
		Coding []struct {
			Code string `json:"code"`
		} `json:"coding"`
	} `json:"securityLabel"`
	Description string `json:"description"`
	Date        string `json:"date"`
	Type        struct {
		Coding []struct {
			System  string `json:"system"`
			Code    string `json:"code"`
			Display string `json:"display"`
		} `json:"coding"`
		Text string `json:"text"`
	} `json:"type"`
	Content []struct {
		Attachment struct {
			Extension []struct {
				URL       string `json:"url"`
				Extension []struct {
					URL         string `json:"url"`
					ValueString string `json:"valueString"`
				} `json:"extension"`
			} `json:"extension"`
			ContentType string  `json:"contentType"`
			URL         string  `json:"url"`
			Data        *string `json:"data"`
			Size        int64   `json:"size"`
			Title       string  `json:"title"`
			Creation    string  `json:"creation"`
		} `json:"attachment"`
	} `json:"content"`
}

// metadata maps a DocumentReference of patient pid.
func (d *docRef) metadata(pid string) (*qhinv1.DocumentMetadata, bool) {
	if d.ResourceType != "DocumentReference" || !fhir.IsID(d.ID) || len(d.Content) == 0 {
		return nil, false
	}
	att := d.Content[0].Attachment
	m := &qhinv1.DocumentMetadata{Id: d.ID, Patient: &qhinv1.PatientLink{PatientId: pid}, ContentType: att.ContentType, Size: att.Size}
	if len(d.Type.Coding) > 0 {
		m.TypeCode, m.TypeDisplay = d.Type.Coding[0].Code, d.Type.Coding[0].Display
	}
	if m.TypeDisplay == "" {
		m.TypeDisplay = d.Type.Text
	}
	m.Title = firstNonEmpty(d.Description, att.Title, m.TypeDisplay, "Document")
	for _, s := range []string{d.Date, att.Creation} {
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			m.Created = timestamppb.New(t)
			break
		}
		if t, err := time.Parse("2006-01-02", s); err == nil {
			m.Created = timestamppb.New(t)
			break
		}
	}
	for _, e := range att.Extension {
		if e.URL != "http://hl7.org/fhir/StructureDefinition/alternate-hash" {
			continue
		}
		for _, x := range e.Extension {
			if x.URL == "hash" && len(x.ValueString) == 64 {
				m.Sha256 = strings.ToLower(x.ValueString)
			}
		}
	}
	if m.ContentType == "" {
		m.ContentType = "application/octet-stream"
	}
	// Security labels, from meta.security and securityLabel: every code
	// counts (the member's policy withholds what it does not allow).
	var labels []string
	for _, c := range d.Meta.Security {
		labels = append(labels, c.Code)
	}
	for _, l := range d.SecurityLabel {
		for _, c := range l.Coding {
			labels = append(labels, c.Code)
		}
	}
	for _, l := range labels {
		if l != "" && !slices.Contains(m.SecurityLabels, l) {
			m.SecurityLabels = append(m.SecurityLabels, l)
		}
	}
	return m, true
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// Documents implements participant.Records.
func (r *Records) Documents(ctx context.Context, patientIDs []string, f store.Filter) ([]*qhinv1.DocumentMetadata, error) {
	var out []*qhinv1.DocumentMetadata
	for _, pid := range patientIDs {
		if !fhir.IsID(pid) {
			continue // not an id this server could have given
		}
		q := url.Values{"patient": {pid}, "_count": {"200"}}
		if len(f.TypeCodes) > 0 {
			q.Set("type", strings.Join(f.TypeCodes, ","))
		}
		if !f.Since.IsZero() {
			q.Add("date", "ge"+f.Since.UTC().Format(time.RFC3339))
		}
		if !f.Until.IsZero() {
			q.Add("date", "lt"+f.Until.UTC().Format(time.RFC3339))
		}
		next := r.base.String() + "/DocumentReference?" + q.Encode()
		for page := 0; next != "" && page < maxPages; page++ {
			var b searchset
			if err := r.getJSON(ctx, http.MethodGet, next, "document search", nil, &b); err != nil {
				if errors.Is(err, store.ErrNotFound) {
					break
				}
				return nil, err
			}
			for _, e := range b.Entry {
				var d docRef
				if json.Unmarshal(e.Resource, &d) != nil {
					continue
				}
				if m, ok := d.metadata(pid); ok && keep(f, m) {
					out = append(out, m)
				}
			}
			next = ""
			if n := b.next(); n != "" {
				next, _ = r.ref(n)
			}
		}
	}
	return out, nil
}

// keep applies the filter again: the server's own search may be looser.
func keep(f store.Filter, m *qhinv1.DocumentMetadata) bool {
	if len(f.TypeCodes) > 0 && !slices.Contains(f.TypeCodes, m.TypeCode) {
		return false
	}
	t := m.GetCreated().AsTime()
	if !f.Since.IsZero() && (m.Created == nil || t.Before(f.Since)) {
		return false
	}
	if !f.Until.IsZero() && (m.Created == nil || !t.Before(f.Until)) {
		return false
	}
	return true
}

// StreamDocument implements participant.Records: the document is read into
// a temporary file while its size and SHA-256 are counted, then passed on
// chunk by chunk.
func (r *Records) StreamDocument(ctx context.Context, id string, header func(*qhinv1.DocumentMetadata) error, chunk func([]byte) error) error {
	if !fhir.IsID(id) {
		return fmt.Errorf("document: %w", store.ErrNotFound)
	}
	var d docRef
	if err := r.getJSON(ctx, http.MethodGet, r.base.String()+"/DocumentReference/"+id, "document read", nil, &d); err != nil {
		return err
	}
	m, ok := d.metadata("")
	if !ok {
		return errors.New("upstream document read: not a DocumentReference with content")
	}
	m.Patient = nil
	att := d.Content[0].Attachment
	var body io.Reader
	switch {
	case att.Data != nil:
		body = base64.NewDecoder(base64.StdEncoding, strings.NewReader(*att.Data))
	case att.URL != "":
		u, ok := r.ref(att.URL)
		if !ok {
			return errors.New("upstream document: the attachment is not on the upstream server")
		}
		// The timeout bounds the wait for the answer's headers; the
		// transfer is bounded by the network's deadline (ctx).
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		timer := time.AfterFunc(r.cfg.Timeout, cancel)
		resp, err := r.call(cctx, http.MethodGet, u, "*/*", "binary read", nil)
		timer.Stop()
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body = resp.Body
		if ct := resp.Header.Get("Content-Type"); ct != "" && m.ContentType == "application/octet-stream" {
			m.ContentType = ct
		}
	default:
		return errors.New("upstream document: the attachment has neither data nor url")
	}
	if m.Sha256 != "" && m.Size > 0 && m.Size <= r.cfg.MaxDocumentBytes {
		// The server states the size and SHA-256 (the alternate-hash
		// extension): stream straight through; the network checks the
		// digest end to end.
		if err := header(m); err != nil {
			return err
		}
		return copyChunks(ctx, io.LimitReader(body, m.Size+1), m.Size, chunk)
	}
	spool, err := os.CreateTemp(r.cfg.SpoolDir, "upstream-document-*")
	if err != nil {
		return fmt.Errorf("upstream document: spool: %w", err)
	}
	defer os.Remove(spool.Name())
	defer spool.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(spool, h), io.LimitReader(body, r.cfg.MaxDocumentBytes+1))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("upstream binary read: %w", participant.ErrUnreachable)
	}
	if n > r.cfg.MaxDocumentBytes {
		return fmt.Errorf("upstream document: larger than %d bytes", r.cfg.MaxDocumentBytes)
	}
	m.Size, m.Sha256 = n, hex.EncodeToString(h.Sum(nil))
	if err := header(m); err != nil {
		return err
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return copyChunks(ctx, spool, n, chunk)
}

// copyChunks passes r on in chunks of store.ChunkSize; it fails when r holds
// other than size bytes.
func copyChunks(ctx context.Context, r io.Reader, size int64, chunk func([]byte) error) error {
	buf := make([]byte, store.ChunkSize)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, err := io.ReadFull(r, buf)
		n += int64(k)
		if n > size {
			return errors.New("upstream document: longer than its stated size")
		}
		if k > 0 {
			if err := chunk(buf[:k]); err != nil {
				return err
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			if n != size {
				return errors.New("upstream document: shorter than its stated size")
			}
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("upstream binary read: %w", participant.ErrUnreachable)
		}
	}
}
