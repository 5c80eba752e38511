package pki

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// DefaultWorkloadTimeout bounds the wait for the first SVID from a Workload
// API (go-spiffe's X509Source would wait for ever: go-spiffe#207).
const DefaultWorkloadTimeout = 30 * time.Second

// ErrWorkloadAPI is returned when a node cannot get its identity from a
// Workload API.
var ErrWorkloadAPI = errors.New("workload API")

// WorkloadOptions say where a node's Workload API is and which of the SVIDs
// it offers is the node's.
type WorkloadOptions struct {
	// Addr is unix:///path/to/socket (or tcp://IP:PORT).
	Addr string
	// ID is the SPIFFE ID the node takes; when zero, Path is matched
	// instead, and when both are empty the first SVID offered.
	ID spiffeid.ID
	// Path matches an SVID by its SPIFFE ID's path (/broker/b1) in whatever
	// trust domain the Workload API serves.
	Path string
	// Timeout bounds the wait for the first SVID (DefaultWorkloadTimeout).
	Timeout time.Duration
}

func (o WorkloadOptions) want() string {
	switch {
	case !o.ID.IsZero():
		return o.ID.String()
	case o.Path != "":
		return "spiffe://<trust domain>" + o.Path
	}
	return ""
}

func (o WorkloadOptions) matches(id spiffeid.ID) bool {
	switch {
	case !o.ID.IsZero():
		return id == o.ID
	case o.Path != "":
		return id.Path() == o.Path
	}
	return true
}

// WorkloadSource is a Source fed by a SPIFFE Workload API (a SPIRE agent,
// or the embedded Issuer): go-spiffe's X509Source, which keeps a stream
// open and swaps SVIDs and bundles as they rotate, with a picker that takes
// the node's own SVID among those the API offers.
type WorkloadSource struct {
	addr string
	opts WorkloadOptions
	src  *workloadapi.X509Source

	mu      sync.Mutex
	offered []spiffeid.ID
	picked  *x509svid.SVID
	lastErr string
}

var _ Source = (*WorkloadSource)(nil)

// OpenWorkloadAPI connects to a Workload API and waits, at most
// opts.Timeout, for the node's SVID. It fails, naming the socket and the
// cause, when the socket is missing, when nothing arrives in time, when the
// SVIDs offered do not include the one asked for, and when the SVID does not
// verify against the bundle that came with it.
func OpenWorkloadAPI(ctx context.Context, opts WorkloadOptions) (*WorkloadSource, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultWorkloadTimeout
	}
	if err := checkWorkloadAddr(opts.Addr); err != nil {
		return nil, err
	}
	ws := &WorkloadSource{addr: opts.Addr, opts: opts}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx,
		workloadapi.WithClientOptions(workloadapi.WithAddr(opts.Addr), workloadapi.WithLogger(ws)),
		workloadapi.WithDefaultX509SVIDPicker(ws.pick))
	if err != nil {
		ws.mu.Lock()
		last := ws.lastErr
		ws.mu.Unlock()
		if errors.Is(err, context.DeadlineExceeded) {
			if last == "" {
				last = "no answer"
			}
			return nil, fmt.Errorf("%w %s: no SVID within %v (last: %s): is the agent serving, and is this process registered with it?",
				ErrWorkloadAPI, opts.Addr, opts.Timeout, last)
		}
		return nil, fmt.Errorf("%w %s: %v", ErrWorkloadAPI, opts.Addr, err)
	}
	ws.src = src
	svid, err := src.GetX509SVID()
	if err != nil || svid == nil {
		src.Close()
		return nil, fmt.Errorf("%w %s offers %s, not %s", ErrWorkloadAPI, opts.Addr, ws.offeredText(), opts.want())
	}
	if _, _, err := x509svid.Verify(svid.Certificates, src); err != nil {
		src.Close()
		return nil, fmt.Errorf("%w %s: SVID %s does not verify against the bundle it came with: %v", ErrWorkloadAPI, opts.Addr, svid.ID, err)
	}
	return ws, nil
}

// checkWorkloadAddr parses addr and, for a Unix socket, checks that the
// socket exists, so that a typo fails at once instead of after the timeout.
func checkWorkloadAddr(addr string) error {
	if addr == "" {
		return fmt.Errorf("%w: no address (want unix:///path/to/socket)", ErrWorkloadAPI)
	}
	if err := workloadapi.ValidateAddress(addr); err != nil {
		return fmt.Errorf("%w address %q: %v (want unix:///path/to/socket)", ErrWorkloadAPI, addr, err)
	}
	u, err := url.Parse(addr)
	if err != nil || u.Scheme != "unix" {
		return nil
	}
	path := u.Path
	if u.Host != "" {
		path = u.Host + u.Path
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w socket %s does not exist: is the SPIRE agent (or qhinctl dev) running, and is this its socket?", ErrWorkloadAPI, path)
	case err != nil:
		return fmt.Errorf("%w socket %s: %v", ErrWorkloadAPI, path, err)
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Errorf("%w socket %s is not a socket", ErrWorkloadAPI, path)
	}
	return nil
}

// pick chooses the node's SVID among those offered. An update without it
// keeps the last one (a Workload API should never drop a registered
// identity; if it does, the node keeps its certificate until it expires).
func (ws *WorkloadSource) pick(svids []*x509svid.SVID) *x509svid.SVID {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.offered = ws.offered[:0]
	for _, s := range svids {
		ws.offered = append(ws.offered, s.ID)
	}
	for _, s := range svids {
		if ws.opts.matches(s.ID) {
			ws.picked = s
			return s
		}
	}
	return ws.picked
}

func (ws *WorkloadSource) offeredText() string {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if len(ws.offered) == 0 {
		return "no SVID"
	}
	s := make([]string, len(ws.offered))
	for i, id := range ws.offered {
		s[i] = id.String()
	}
	slices.Sort(s)
	if len(s) > 8 {
		s = append(s[:8], fmt.Sprintf("and %d more", len(s)-8))
	}
	return strings.Join(s, ", ")
}

// Addr is the Workload API's address.
func (ws *WorkloadSource) Addr() string { return ws.addr }

// GetX509SVID implements x509svid.Source.
func (ws *WorkloadSource) GetX509SVID() (*x509svid.SVID, error) { return ws.src.GetX509SVID() }

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (ws *WorkloadSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return ws.src.GetX509BundleForTrustDomain(td)
}

// Updated returns a channel that receives after every update from the API.
func (ws *WorkloadSource) Updated() <-chan struct{} { return ws.src.Updated() }

// Close ends the stream to the Workload API.
func (ws *WorkloadSource) Close() error { return ws.src.Close() }

// go-spiffe's logger.Logger: the client's watch errors (it retries them
// itself) are kept so that a timeout can say what went wrong.

// Debugf implements logger.Logger.
func (ws *WorkloadSource) Debugf(string, ...any) {}

// Infof implements logger.Logger.
func (ws *WorkloadSource) Infof(string, ...any) {}

// Warnf implements logger.Logger.
func (ws *WorkloadSource) Warnf(format string, args ...any) { ws.note(format, args...) }

// Errorf implements logger.Logger.
func (ws *WorkloadSource) Errorf(format string, args ...any) { ws.note(format, args...) }

func (ws *WorkloadSource) note(format string, args ...any) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.lastErr = truncate(fmt.Sprintf(format, args...), 300)
}
