package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/cmd/internal/cli"
	"github.com/openqhin/openqhin/pki"
)

// globals are the flags every command takes.
type globals struct {
	config      string
	output      string
	timeout     time.Duration
	tracing     cli.Tracing
	stopTracing func(context.Context) error
	// workloadAPI and spiffeID take the caller's identity from a Workload
	// API instead of the config's SVID directories.
	workloadAPI string
	spiffeID    string
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "qhinctl",
		Short:         "Operate and query an OpenQHIN network",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       cli.Version("qhinctl"),
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if g.output != "table" && g.output != "json" {
				return fmt.Errorf("-o: must be table or json, not %q", g.output)
			}
			var err error
			g.stopTracing, err = g.tracing.Start(cmd.Context(), "qhinctl")
			return err
		},
		PersistentPostRunE: func(*cobra.Command, []string) error {
			if g.stopTracing == nil {
				return nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return g.stopTracing(ctx)
		},
	}
	root.SetVersionTemplate("{{.Version}}")
	g.tracing.AddFlags(root.PersistentFlags())
	root.PersistentFlags().StringVar(&g.config, "config", os.Getenv("QHIN_CONFIG"), "client configuration file (default $QHIN_CONFIG)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().DurationVar(&g.timeout, "timeout", 30*time.Second, "deadline of each call to the network")
	root.PersistentFlags().StringVar(&g.workloadAPI, "workload-api", "", "take the caller's SVID from this SPIFFE Workload API (unix:///path) instead of the config's svid_dir")
	root.PersistentFlags().StringVar(&g.spiffeID, "spiffe-id", "", "with --workload-api: the SPIFFE ID to take when the API offers several")
	root.AddCommand(
		newDevCmd(g),
		newStatusCmd(g),
		newPKICmd(g),
		newQueryCmd(g),
		newRetrieveCmd(g),
		newDirectoryCmd(g),
		newClusterCmd(g),
		newImportCmd(g),
		newPurposesCmd(g),
		newBenchCmd(g),
		newMatchCmd(g),
		newLocatorCmd(g),
		newAuditCmd(g),
		newConsentCmd(g),
		newParticipantCmd(g),
	)
	return root
}

func (g *globals) loadConfig() (*client.Config, error) {
	if g.config == "" {
		return nil, errors.New("no configuration: pass --config FILE or set QHIN_CONFIG (qhinctl dev writes DIR/qhinctl.yaml)")
	}
	return client.LoadConfig(g.config)
}

// fromWorkloadAPI returns the caller's identity from --workload-api, or nil
// when the flag is not given. The source lives as long as the command.
func (g *globals) fromWorkloadAPI(ctx context.Context, path string) (pki.Source, error) {
	if g.workloadAPI == "" {
		return nil, nil
	}
	id := cli.Identity{WorkloadAPI: g.workloadAPI, SPIFFEID: g.spiffeID, Timeout: g.timeout}
	src, _, err := id.Open(ctx, path)
	return src, err
}

// operator loads the config and the operator's SVID.
func (g *globals) operator() (*client.Config, pki.Source, error) {
	cfg, err := g.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	if src, err := g.fromWorkloadAPI(context.Background(), ""); src != nil || err != nil {
		return cfg, src, err
	}
	src, err := cfg.OperatorSource()
	if err != nil {
		return nil, nil, err
	}
	return cfg, src, nil
}

// operatorConn dials the brokers as the configured operator.
func (g *globals) operatorConn() (*client.Conn, error) {
	cfg, src, err := g.operator()
	if err != nil {
		return nil, err
	}
	return client.Dial(cfg.Brokers, src, nil)
}

// participantConn dials the brokers as a participant of the config.
func (g *globals) participantConn(as string) (*client.Conn, error) {
	cfg, err := g.loadConfig()
	if err != nil {
		return nil, err
	}
	var src pki.Source
	if src, err = g.fromWorkloadAPI(context.Background(), ""); src == nil && err == nil {
		src, err = cfg.ParticipantSource(as)
	}
	if err != nil {
		return nil, err
	}
	return client.Dial(cfg.Brokers, src, nil)
}

func (g *globals) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, g.timeout)
}

// print writes a response as protojson, or as the table render makes.
func (g *globals) print(w io.Writer, m proto.Message, render func(t *table)) error {
	if g.output == "json" {
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: false}.Marshal(m)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	render(t)
	return t.tw.Flush()
}

// table writes aligned columns.
type table struct {
	tw *tabwriter.Writer
}

func (t *table) row(cols ...any) {
	s := make([]string, len(cols))
	for i, c := range cols {
		s[i] = fmt.Sprint(c)
		if s[i] == "" {
			s[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(s, "\t"))
}

func (t *table) line(format string, args ...any) {
	fmt.Fprintf(t.tw, format+"\n", args...)
}

func newTabWriter(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }
