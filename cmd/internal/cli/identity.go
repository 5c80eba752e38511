package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	flag "github.com/spf13/pflag"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/openqhin/openqhin/pki"
)

// Identity is the flags that say where a node's SVID comes from: files in a
// directory (--svid-dir), or a SPIFFE Workload API (--workload-api, a SPIRE
// agent or qhinctl dev's issuer), which rotates SVIDs and bundles without a
// restart.
type Identity struct {
	SVIDDir     string
	WorkloadAPI string
	SPIFFEID    string
	Timeout     time.Duration
}

// AddFlags registers --svid-dir, --workload-api, --spiffe-id and
// --workload-api-timeout.
func (i *Identity) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&i.SVIDDir, "svid-dir", "", "directory with svid.pem, svid.key and bundle.pem (re-read when they change)")
	fs.StringVar(&i.WorkloadAPI, "workload-api", "", "SPIFFE Workload API to take the SVID from, instead of --svid-dir: unix:///path/to/agent.sock")
	fs.StringVar(&i.SPIFFEID, "spiffe-id", "", "with --workload-api: the SPIFFE ID to take when the API offers several (default: a broker's id from --node-id, else the first)")
	fs.DurationVar(&i.Timeout, "workload-api-timeout", pki.DefaultWorkloadTimeout, "with --workload-api: how long to wait for the first SVID before giving up")
}

// Open returns the node's SVID source and a function that releases it.
// defaultPath, when not empty, picks the SVID whose SPIFFE ID has that path
// (/broker/b1) when --spiffe-id is not given.
func (i *Identity) Open(ctx context.Context, defaultPath string) (pki.Source, io.Closer, error) {
	switch {
	case i.SVIDDir != "" && i.WorkloadAPI != "":
		return nil, nil, errors.New("--svid-dir and --workload-api: give one, not both")
	case i.SVIDDir != "":
		if i.SPIFFEID != "" {
			return nil, nil, errors.New("--spiffe-id goes with --workload-api; an SVID directory holds one identity")
		}
		src, err := pki.LoadDir(i.SVIDDir)
		return src, io.NopCloser(nil), err
	case i.WorkloadAPI != "":
		opts := pki.WorkloadOptions{Addr: i.WorkloadAPI, Path: defaultPath, Timeout: i.Timeout}
		if i.SPIFFEID != "" {
			id, err := spiffeid.FromString(i.SPIFFEID)
			if err != nil {
				return nil, nil, fmt.Errorf("--spiffe-id: %w", err)
			}
			opts.ID, opts.Path = id, ""
		}
		src, err := pki.OpenWorkloadAPI(ctx, opts)
		if err != nil {
			return nil, nil, err
		}
		return src, src, nil
	}
	return nil, nil, errors.New("--svid-dir or --workload-api is required")
}
