package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// spireBinaries returns the directory of spire-server and spire-agent
// (v1.13.3, pinned in e2e/tools/go.mod): $SPIRE_BIN, else e2e/tools/bin
// (make spire), else it builds them there from the Go module proxy. It skips
// the test, saying why, only when they cannot be built.
func spireBinaries(t *testing.T) string {
	t.Helper()
	dirs := []string{os.Getenv("SPIRE_BIN")}
	tools, _ := filepath.Abs("tools/bin")
	dirs = append(dirs, tools)
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "spire-server")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "spire-agent")); err == nil {
				return d
			}
		}
	}
	start := time.Now()
	build := exec.Command("go", "install", "tool")
	build.Dir = "tools"
	build.Env = append(os.Environ(), "GOBIN="+tools)
	if out, err := build.CombinedOutput(); err != nil {
		t.Skipf("SPIRE v1.13.3 cannot be built here (go install tool in e2e/tools: %v), so the SPIRE end-to-end test does not run:\n%s", err, lastLines(string(out), 20))
	}
	t.Logf("built spire-server and spire-agent in %v (make spire builds them ahead)", time.Since(start).Round(time.Second))
	return tools
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestSPIRE_NetworkOnAgentSVIDs runs a real SPIRE server and agent,
// attests the agent with a join token, registers three brokers, three
// participants and an operator, and runs the network with every SVID from
// the agent's Workload API socket; queries succeed before, during and after
// every node's SVID is rotated by SPIRE.
//
// Every process here runs under one uid, so unix:uid alone cannot tell a
// broker from a participant: each entry also carries unix:path, the binary
// the agent reads from /proc/PID/exe (the unix attestor's
// discover_workload_path), and the nodes of one binary, which receive the
// same set of SVIDs, each pick their own with --spiffe-id.
func TestSPIRE_NetworkOnAgentSVIDs(t *testing.T) {
	if testing.Short() {
		t.Skip("runs SPIRE")
	}
	spire := spireBinaries(t)
	bin := buildCommands(t)
	dir, err := os.MkdirTemp("", "qspire")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	const td = "qhin.test"
	serverSock, agentSock := filepath.Join(dir, "server.sock"), filepath.Join(dir, "agent.sock")
	port := freePort(t)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	serverConf := write("server.conf", fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "WARN"
  ca_ttl = "1h"
  default_x509_svid_ttl = "1h"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  KeyManager "memory" { plugin_data {} }
  NodeAttestor "join_token" { plugin_data {} }
}
`, port, serverSock, td, filepath.Join(dir, "server-data"), filepath.Join(dir, "server-data", "datastore.sqlite3")))
	agentConf := write("agent.conf", fmt.Sprintf(`agent {
  data_dir = %q
  log_level = "WARN"
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = %q
  trust_domain = %q
  insecure_bootstrap = true
}
plugins {
  NodeAttestor "join_token" { plugin_data {} }
  KeyManager "memory" { plugin_data {} }
  WorkloadAttestor "unix" {
    plugin_data {
      discover_workload_path = true
    }
  }
}
`, filepath.Join(dir, "agent-data"), port, agentSock, td))

	logf, err := os.Create(filepath.Join(dir, "spire.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("SPIRE log:\n%s", lastLines(string(b), 60))
		}
	})
	daemon := func(name string, args ...string) {
		cmd := exec.Command(filepath.Join(spire, name), args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = childAttr()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
	spireCmd := func(name string, args ...string) (string, error) {
		out, err := exec.Command(filepath.Join(spire, name), args...).CombinedOutput()
		return string(out), err
	}
	healthy := func(name, sock string) {
		pollUntil(t, 60*time.Second, name+" healthy", func() error {
			out, err := spireCmd(name, "healthcheck", "-socketPath", sock)
			if err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
	}

	daemon("spire-server", "run", "-config", serverConf)
	healthy("spire-server", serverSock)
	out, err := spireCmd("spire-server", "token", "generate", "-socketPath", serverSock, "-spiffeID", "spiffe://"+td+"/agent/e2e")
	if err != nil {
		t.Fatalf("token generate: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Token: (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no token in %q", out)
	}
	daemon("spire-agent", "run", "-config", agentConf, "-joinToken", m[1])
	healthy("spire-agent", agentSock)

	// SVIDs live 20s: the agent renews each at half its life, so every
	// node's SVID rotates within the test.
	const ttl = 20 * time.Second
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	uid := "unix:uid:" + strconv.Itoa(os.Getuid())
	register := func(id, binary string) {
		out, err := spireCmd("spire-server", "entry", "create", "-socketPath", serverSock,
			"-parentID", "spiffe://"+td+"/agent/e2e", "-spiffeID", id,
			"-selector", uid, "-selector", "unix:path:"+binary, "-x509SVIDTTL", strconv.Itoa(int(ttl.Seconds())))
		if err != nil {
			t.Fatalf("entry create %s: %v\n%s", id, err, out)
		}
	}
	for i := 1; i <= 3; i++ {
		register(fmt.Sprintf("spiffe://%s/broker/b%d", td, i), filepath.Join(bin, "qhin-broker"))
		register(fmt.Sprintf("spiffe://%s/participant/p%d", td, i), filepath.Join(bin, "qhin-participant"))
	}
	// This test process is the operator, and queries as p1.
	register("spiffe://"+td+"/operator/"+OperatorName, self)
	register("spiffe://"+td+"/participant/p1", self)

	tdID := spiffeid.RequireTrustDomainFromString(td)
	open := func(role pki.Role, name string) *pki.WorkloadSource {
		src, err := pki.OpenWorkloadAPI(context.Background(), pki.WorkloadOptions{Addr: "unix://" + agentSock,
			ID: pki.MustIdentity(tdID, role, name).ID, Timeout: 90 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		return src
	}
	operator := open(pki.RoleOperator, OperatorName)
	p1 := open(pki.RoleParticipant, "p1")

	nw, err := PrepareProcesses(ProcessOptions{
		Dir: filepath.Join(dir, "net"), TrustDomain: td, Brokers: 3, Participants: 3, BasePort: freeBasePort(t),
		BrokerBin: filepath.Join(bin, "qhin-broker"), ParticipantBin: filepath.Join(bin, "qhin-participant"),
		Output: logf, WorkloadAPI: "unix://" + agentSock, Operator: operator,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if _, err := nw.SeedSynthetic(ctx, 60, 1, nil); err != nil {
		t.Fatal(err)
	}
	example, err := nw.ExamplePerson()
	if err != nil || example == nil {
		t.Fatalf("example person: %v", err)
	}
	if err := nw.Start(ctx); err != nil {
		t.Fatalf("start the network on SPIRE SVIDs: %v", err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		nw.Stop(sctx)
	})

	conn, err := client.Dial(nw.BrokerAddrs(), p1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	queries := 0
	ask := func(phase string) {
		t.Helper()
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		resp, err := conn.Gateway().DiscoverPatients(qctx, &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: example})
		if err != nil {
			t.Fatalf("phase %q: query: %v", phase, err)
		}
		if len(resp.Persons) != 1 || !linksAt(resp.Persons[0], "p2", "p3") {
			t.Fatalf("phase %q: want one person linked at p2 and p3, got %v", phase, resp.Persons)
		}
		queries++
	}
	ask("first query")

	// Which certificate each node presents now, seen from a new handshake.
	presented := func(p *Process) (string, error) {
		id := pki.MustIdentity(tdID, p.Role, p.ID).ID
		cfg := pki.ClientTLS(operator, pki.AuthorizeID(id))
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", p.GRPCAddr, cfg)
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	nodes := append(append([]*Process(nil), nw.Brokers...), nw.Participants...)
	first := map[string]string{}
	for _, p := range nodes {
		s, err := presented(p)
		if err != nil {
			t.Fatalf("handshake with %s: %v", p.ID, err)
		}
		first[p.ID] = s
	}
	pollUntil(t, 3*ttl, "every node presents a rotated SVID", func() error {
		ask("during the rotation")
		for _, p := range nodes {
			s, err := presented(p)
			if err != nil {
				return fmt.Errorf("handshake with %s: %w", p.ID, err)
			}
			if s == first[p.ID] {
				return errors.New(p.ID + " still presents its first SVID")
			}
		}
		return nil
	})
	// A connection made now uses the rotated SVIDs end to end.
	fresh, err := client.Dial(nw.BrokerAddrs(), p1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	conn = fresh
	ask("after the rotation, on a new connection")
	t.Logf("%d queries across one rotation of every SVID, none failed", queries)
}
