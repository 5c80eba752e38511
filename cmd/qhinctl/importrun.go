package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/openqhin/openqhin/participant/fhir"
	"github.com/openqhin/openqhin/pki"
)

// importFlags configure qhinctl import.
type importFlags struct {
	participant string
	dataDir     string
	fhirURL     string
	cacert      string
	token       string
}

func newImportCmd(g *globals) *cobra.Command {
	f := importFlags{}
	cmd := &cobra.Command{
		Use:   "import PATH...",
		Short: "Load FHIR bundles and C-CDA documents into a participant, running or stopped",
		Long: `Import FHIR R4 JSON bundles (*.json: Patient, DocumentReference with a Binary
or inline data; other resources are kept as one FHIR document per patient)
and C-CDA R2.1 documents (*.xml: a document of the patient its recordTarget
names) into participant --participant. Each PATH is a file or a directory of
them.

A running participant takes them through its FHIR API (the fhir: address of
the participant in the config, or --fhir), one transaction per file. A
stopped one is written directly (data_dir: in the config, or --data-dir).
Either way a file is imported whole or not at all: a bad file is reported by
name, with the reason, and skipped.`,
		Example: `  qhinctl import --participant p2 ./bundles
  qhinctl import --participant p2 ./ccda/CCD.xml
  qhinctl import --data-dir ./p1-data --participant p1 ./bundles   # a stopped participant`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return runImport(cmd, g, f, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.participant, "participant", "", "the participant to load (default: the config's participant)")
	fl.StringVar(&f.dataDir, "data-dir", "", "the participant's data directory, to write while it is stopped (default: the config's data_dir)")
	fl.StringVar(&f.fhirURL, "fhir", "", "the participant's FHIR API, https://HOST:PORT or unix:///PATH (default: the config's fhir)")
	fl.StringVar(&f.cacert, "cacert", "", "CA certificate (PEM) of the FHIR API's TLS (default: the participant's bundle.pem)")
	fl.StringVar(&f.token, "token", os.Getenv("QHIN_FHIR_TOKEN"), "bearer token for a FHIR API that requires one (default $QHIN_FHIR_TOKEN)")
	cmd.AddCommand(newImportFHIRCmd(), newImportSyntheticCmd())
	return cmd
}

// importFiles lists the files of paths: bundles and C-CDA documents, a
// directory's in name order.
func importFiles(paths []string) ([]string, error) {
	var files []string
	for _, a := range paths {
		fi, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			files = append(files, a)
			continue
		}
		ents, err := os.ReadDir(a)
		if err != nil {
			return nil, err
		}
		var here []string
		for _, e := range ents {
			if e.Type().IsRegular() && (strings.HasSuffix(e.Name(), ".json") || fhir.IsCCDAFile(e.Name())) {
				here = append(here, filepath.Join(a, e.Name()))
			}
		}
		sort.Strings(here)
		files = append(files, here...)
	}
	return files, nil
}

func runImport(cmd *cobra.Command, g *globals, f importFlags, args []string) error {
	files, err := importFiles(args)
	if err != nil {
		return err
	}
	svidDir := ""
	if g.config != "" {
		cfg, err := g.loadConfig()
		if err != nil {
			return err
		}
		if id := cfg.ParticipantIdentity(f.participant); id != nil {
			f.participant = firstOf(f.participant, id.ID)
			f.fhirURL = firstOf(f.fhirURL, id.FHIR)
			f.dataDir = firstOf(f.dataDir, id.DataDir)
			svidDir = id.SVIDDir
		} else if f.participant != "" {
			return fmt.Errorf("the config has no participant %s", f.participant)
		}
	}
	if f.participant == "" {
		return errors.New("--participant is required (or a config whose participant names it)")
	}
	if f.cacert == "" && svidDir != "" {
		f.cacert = filepath.Join(svidDir, pki.BundleFile)
	}
	out := cmd.OutOrStdout()
	bar := progressbar.NewOptions(len(files), progressbar.OptionSetDescription("importing"),
		progressbar.OptionSetWriter(cmd.ErrOrStderr()), progressbar.OptionShowCount(), progressbar.OptionClearOnFinish())
	progress := func(done, _ int) { bar.Set(done) }

	var res fhir.Result
	var via string
	online := false
	if f.fhirURL != "" {
		fc, err := newFHIRClient(f.fhirURL, f.cacert, f.token)
		if err != nil {
			return err
		}
		switch err := fc.ping(cmd.Context()); {
		case err == nil:
			online, via = true, "through its FHIR API at "+f.fhirURL
			res, err = fc.importFiles(cmd.Context(), files, progress)
			bar.Finish()
			if err != nil {
				printImport(out, f.participant, via, res)
				return err
			}
		case f.dataDir == "":
			return fmt.Errorf("participant %s: its FHIR API at %s does not answer (%v), and no --data-dir to write to while it is stopped", f.participant, f.fhirURL, err)
		}
	}
	if !online {
		if f.dataDir == "" {
			return errors.New("--data-dir (a stopped participant) or --fhir (a running one) is required")
		}
		st, err := openStore(f.dataDir)
		if err != nil {
			return err
		}
		defer st.Close()
		key, err := st.IDKey()
		if err != nil {
			return err
		}
		via = "into its store in " + f.dataDir
		im := &fhir.Importer{Sink: st, ParticipantID: f.participant, IDKey: key}
		res, err = im.ImportFiles(cmd.Context(), files, progress)
		bar.Finish()
		if err != nil {
			printImport(out, f.participant, via, res)
			return err
		}
	}
	printImport(out, f.participant, via, res)
	return nil
}

func printImport(w io.Writer, participant, via string, res fhir.Result) {
	fmt.Fprintf(w, "%s: imported %d file(s) %s: %d patient(s), %d document(s); %d skipped\n",
		participant, res.Files-len(res.Skipped), via, res.Patients, res.Documents, len(res.Skipped))
	for _, s := range res.Skipped {
		fmt.Fprintf(w, "  skipped %s: %s\n", s.File, s.Reason)
	}
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// fhirClient posts files to a participant's FHIR API.
type fhirClient struct {
	base   string
	client *http.Client
	token  string
}

func newFHIRClient(u, cacert, token string) (*fhirClient, error) {
	tr := &http.Transport{ResponseHeaderTimeout: 5 * time.Minute}
	base := strings.TrimRight(u, "/")
	if path, ok := strings.CutPrefix(u, "unix://"); ok {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		base = "http://localhost"
	} else if cacert != "" {
		pem, err := os.ReadFile(cacert)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("--cacert: no PEM certificate in the file")
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &fhirClient{base: base, client: &http.Client{Transport: tr}, token: token}, nil
}

// ping reads the capability statement.
func (c *fhirClient) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/metadata", nil)
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /metadata: HTTP %d", resp.StatusCode)
	}
	return nil
}

// importFiles posts each file as one transaction. A file the participant
// refuses (4xx) is skipped with the reason it gave; a failure of the
// participant or the connection stops the import. Each file is applied
// whole or not at all, so a stop leaves no file half-imported.
func (c *fhirClient) importFiles(ctx context.Context, files []string, progress func(done, total int)) (fhir.Result, error) {
	var res fhir.Result
	for i, path := range files {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		patients, documents, reason, err := c.post(ctx, path)
		if err != nil {
			return res, fmt.Errorf("import %s: %w", path, err)
		}
		res.Files++
		if reason != "" {
			res.Skipped = append(res.Skipped, fhir.Skip{File: path, Reason: reason})
		} else {
			res.Patients += patients
			res.Documents += documents
		}
		progress(i+1, len(files))
	}
	return res, nil
}

func (c *fhirClient) post(ctx context.Context, path string) (patients, documents int, reason string, err error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return 0, 0, "open: " + err.Error(), nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/", f)
	if err != nil {
		return 0, 0, "", err
	}
	req.ContentLength = fi.Size()
	req.Header.Set("Content-Type", "application/fhir+json")
	if fhir.IsCCDAFile(path) {
		req.Header.Set("Content-Type", "application/xml")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusOK:
		patients, _ = strconv.Atoi(resp.Header.Get("X-Patients-Written"))
		documents, _ = strconv.Atoi(resp.Header.Get("X-Documents-Written"))
		return patients, documents, "", nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusUnauthorized:
		return 0, 0, outcomeText(resp.StatusCode, body), nil
	}
	return 0, 0, "", errors.New(outcomeText(resp.StatusCode, body))
}

// outcomeText is an OperationOutcome's first diagnostics, with the status.
func outcomeText(status int, body []byte) string {
	var oo struct {
		Issue []struct {
			Diagnostics string `json:"diagnostics"`
		} `json:"issue"`
	}
	if json.Unmarshal(body, &oo) == nil && len(oo.Issue) > 0 && oo.Issue[0].Diagnostics != "" {
		return fmt.Sprintf("%s (HTTP %d)", oo.Issue[0].Diagnostics, status)
	}
	return fmt.Sprintf("HTTP %d", status)
}
