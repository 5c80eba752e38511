package facade

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/openqhin/openqhin/participant"
	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Local is the member's own side: its records (what it answers the network
// with) and the write path of the live feed. participant.Server is one.
type Local interface {
	// Records answers local reads.
	Records() participant.Records
	// Apply writes a batch atomically (participant.Server.Apply).
	Apply(ctx context.Context, b store.Batch) error
	// HasPatient reports whether the member holds patient id.
	HasPatient(id string) (bool, error)
	// IDKey derives local ids of imported C-CDA documents.
	IDKey() ([]byte, error)
}

// Defaults of Config's zero fields.
const (
	DefaultMaxBodyBytes    = 32 << 20
	DefaultQueryTimeout    = 30 * time.Second
	DefaultRetrieveTimeout = 10 * time.Minute
	DefaultHandleTTL       = time.Hour
	DefaultMaxHandles      = 200_000
	DefaultCount           = 50
	MaxCount               = 1000
)

// Config describes a facade.
type Config struct {
	// ParticipantID is the member the facade belongs to.
	ParticipantID string
	// TrustDomain names the members in link identifiers' systems
	// (spiffe://TRUST-DOMAIN/participant/ID).
	TrustDomain string
	// Gateway reaches the network under the member's identity (a
	// broker/client.Conn's Gateway); nil leaves the network interactions
	// out.
	Gateway qhinv1.GatewayClient
	// Local is the member's records; nil leaves /local and the live feed
	// out.
	Local Local
	// Verifier checks bearer tokens; nil takes the purpose and end user
	// from headers alone.
	Verifier *Verifier
	// BaseURL is the facade's absolute URL in links ("https://host:port");
	// taken from each request's Host when empty.
	BaseURL string
	// MaxBodyBytes caps a request body (a transaction Bundle, a C-CDA
	// document); DefaultMaxBodyBytes when zero.
	MaxBodyBytes int64
	// QueryTimeout bounds each discovery and document query;
	// RetrieveTimeout each document retrieval.
	QueryTimeout, RetrieveTimeout time.Duration
	// HandleTTL is how long the ids of what the network found stay valid;
	// MaxHandles how many the facade keeps (the oldest go first).
	HandleTTL  time.Duration
	MaxHandles int
	Logger     *slog.Logger
}

// Server is a participant's FHIR facade, an http.Handler.
type Server struct {
	cfg      Config
	verifier *Verifier
	handles  *handles
	mux      *http.ServeMux
	log      *slog.Logger
}

// New builds a facade.
func New(cfg Config) (*Server, error) {
	if cfg.ParticipantID == "" {
		return nil, errors.New("facade: no participant id")
	}
	if cfg.Gateway == nil && cfg.Local == nil {
		return nil, errors.New("facade: neither a gateway nor local records")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = DefaultQueryTimeout
	}
	if cfg.RetrieveTimeout <= 0 {
		cfg.RetrieveTimeout = DefaultRetrieveTimeout
	}
	if cfg.HandleTTL <= 0 {
		cfg.HandleTTL = DefaultHandleTTL
	}
	if cfg.MaxHandles <= 0 {
		cfg.MaxHandles = DefaultMaxHandles
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, verifier: cfg.Verifier, handles: newHandles(cfg.HandleTTL, cfg.MaxHandles), mux: http.NewServeMux(),
		log: log.With("component", "fhir")}
	s.routes()
	return s, nil
}

// handlerFunc serves one interaction for an authenticated caller.
type handlerFunc func(w http.ResponseWriter, r *http.Request, c *caller) error

func (s *Server) routes() {
	s.mux.HandleFunc("GET /metadata", s.capabilities(false))
	if s.cfg.Gateway != nil {
		s.handle("GET /Patient", s.searchPatients)
		s.handle("POST /Patient/$match", s.matchPatients)
		s.handle("GET /Patient/{id}", s.readPerson)
		s.handle("GET /DocumentReference", s.searchDocuments)
		s.handle("GET /DocumentReference/{id}", s.readDocument)
		s.handle("GET /Binary/{id}", s.readBinary)
	}
	if s.cfg.Local != nil {
		s.handle("POST /{$}", s.transaction)
		s.handle("PUT /Patient/{id}", s.putPatient)
		s.handle("DELETE /Patient/{id}", s.deletePatient)
		s.mux.HandleFunc("GET /local/metadata", s.capabilities(true))
		s.handle("GET /local/Patient", s.localSearchPatients)
		s.handle("POST /local/Patient/$match", s.localMatchPatients)
		s.handle("GET /local/Patient/{id}", s.localReadPatient)
		s.handle("GET /local/DocumentReference", s.localSearchDocuments)
		s.handle("GET /local/DocumentReference/{id}", s.localReadDocument)
		s.handle("GET /local/Binary/{id}", s.localReadBinary)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, &problem{status: http.StatusNotFound, code: "not-supported",
			msg: "this server does not support the interaction; GET /metadata lists what it supports"})
	})
}

// handle registers h behind authentication and the error writer.
func (s *Server) handle(pattern string, h handlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		c, err := s.authenticate(r)
		if err == nil {
			err = h(w, r, c)
		}
		if err == nil {
			return
		}
		var (
			p  *problem
			ea *errAuth
		)
		switch {
		case errors.As(err, &ea):
			p = &problem{status: http.StatusUnauthorized, code: "login", msg: ea.msg}
		case errors.As(err, &p):
		default:
			s.log.Error("fhir request failed", "method", r.Method, "route", pattern, "error", err)
			p = &problem{status: http.StatusInternalServerError, code: "exception", msg: "the request failed on this server"}
		}
		if p.status >= 500 {
			s.log.Warn("fhir request", "route", pattern, "status", p.status)
		}
		writeProblem(w, p)
	})
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	s.mux.ServeHTTP(w, r)
}

// base returns the facade's absolute base URL for r.
func (s *Server) base(r *http.Request) string {
	if s.cfg.BaseURL != "" {
		return s.cfg.BaseURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// needNetwork checks what a network query needs: a purpose and an end user,
// and the scope for typ.
func needNetwork(c *caller, typ string) error {
	if c.purpose == "" {
		return badRequest(HeaderPurpose, HeaderPurpose+": required: the TEFCA exchange purpose code of the request (for example T-TREAT), as a header or the token's purpose_of_use claim")
	}
	if c.requester.GetId() == "" {
		return badRequest(HeaderRequesterID, HeaderRequesterID+": required: the end user the request is made for, as a header or the token's sub claim")
	}
	if !c.allows(typ, false) {
		return forbidden("the bearer token's scopes do not allow reading " + typ)
	}
	return nil
}

// requesterOf is the end user as the network receives it. The NPI, when
// the EHR gives one, travels as the requester's NPI (the brokers check it,
// and require it for T-TRTMNT) and stands for the user where no other id
// was given.
func requesterOf(c *caller) *qhinv1.Requester {
	r := &qhinv1.Requester{Id: c.requester.GetId(), Name: c.requester.GetName(), Role: c.requester.GetRole(), Organization: c.requester.GetOrganization(), Npi: c.npi}
	if r.Id == "" {
		r.Id = c.npi
	}
	return r
}

// readBody reads a request body of one of the accepted media types, capped
// at MaxBodyBytes: a body that announces more is refused before any of it
// is read, one that turns out longer is refused once the cap is passed.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, accept ...string) ([]byte, string, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || !contains(accept, mt) {
		return nil, "", &problem{status: http.StatusUnsupportedMediaType, code: "not-supported",
			msg: "Content-Type: must be one of " + strings.Join(accept, ", ")}
	}
	tooLarge := &problem{status: http.StatusRequestEntityTooLarge, code: "too-costly",
		msg: fmt.Sprintf("the request body is larger than this server accepts (%d bytes)", s.cfg.MaxBodyBytes)}
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return nil, "", tooLarge
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, "", tooLarge
	case err != nil:
		return nil, "", badRequest("", "the request body could not be read")
	}
	return b, mt, nil
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// fhirTypes are the media types of a FHIR JSON body.
var fhirTypes = []string{"application/fhir+json", "application/json", "application/json+fhir"}
