package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/client"
	"github.com/openqhin/openqhin/participant"
	"github.com/openqhin/openqhin/participant/store"
	"github.com/openqhin/openqhin/participant/synth"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// procNetwork is a network of separate processes: qhin-broker and
// qhin-participant, started from their commands, each with its own SVID
// and data directory, so that one broker's memory and CPU can be read from
// /proc. The CA, the operator and any extra identity live in this process.
type procNetwork struct {
	dir      string
	td       spiffeid.TrustDomain
	ca       *pki.CA
	operator pki.Source
	brokers  []*proc
	members  []*proc
	// brokerMetrics is broker b1's metrics address.
	brokerMetrics string
}

// proc is one node process.
type proc struct {
	id   string
	addr string
	cmd  *exec.Cmd
	done chan error
}

// findCommand returns the path of a command: beside this executable (as
// make build installs them), else on PATH.
func findCommand(binDir, name string) (string, error) {
	if binDir != "" {
		p := filepath.Join(binDir, name)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("bench: %s: %w", p, err)
		}
		return p, nil
	}
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("bench: %s not found beside this command or on PATH (make build installs it): %w", name, err)
	}
	return p, nil
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startProcNetwork creates a CA and SVIDs in dir, fills each member's store
// with its share of a synthetic population (prepare may add to a member's
// store before it starts), starts the brokers (the first bootstraps, the
// others join it) and the members, and registers the members.
func startProcNetwork(ctx context.Context, dir, binDir string, brokers, members, persons int,
	prepare func(member string, st *store.Store) error, progress Progress) (_ *procNetwork, err error) {
	brokerBin, err := findCommand(binDir, "qhin-broker")
	if err != nil {
		return nil, err
	}
	memberBin, err := findCommand(binDir, "qhin-participant")
	if err != nil {
		return nil, err
	}
	td := spiffeid.RequireTrustDomainFromString("qhin.bench")
	ca, err := pki.NewCA(td, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	n := &procNetwork{dir: dir, td: td, ca: ca}
	defer func() {
		if err != nil {
			n.stop()
		}
	}()
	svid := func(role pki.Role, name string) (string, error) {
		s, err := ca.IssueIdentity(role, name, 12*time.Hour, "127.0.0.1")
		if err != nil {
			return "", err
		}
		d := filepath.Join(dir, string(role)+"-"+name)
		return d, pki.WriteSVID(d, s, ca.Bundle())
	}
	opDir, err := svid(pki.RoleOperator, "bench")
	if err != nil {
		return nil, err
	}
	if n.operator, err = pki.LoadDir(opDir); err != nil {
		return nil, err
	}

	var ids []string
	for j := 1; j <= members; j++ {
		ids = append(ids, "p"+strconv.Itoa(j))
	}
	progress.report("seeding members", 0, members)
	for j, id := range ids {
		if err := os.MkdirAll(filepath.Join(dir, id+"-data"), 0o700); err != nil {
			return nil, err
		}
		st, err := store.Open(filepath.Join(dir, id+"-data", "participant.db"))
		if err != nil {
			return nil, err
		}
		err = participant.ImportSynthetic(ctx, synth.Options{Seed: 1, Persons: persons, Participants: ids},
			map[string]participant.BatchSink{id: st}, nil)
		if err == nil && prepare != nil {
			err = prepare(id, st)
		}
		if cerr := st.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("bench: seed %s: %w", id, err)
		}
		progress.report("seeding members", j+1, members)
	}

	progress.report("starting brokers", 0, brokers)
	for i := 1; i <= brokers; i++ {
		id := "b" + strconv.Itoa(i)
		sd, err := svid(pki.RoleBroker, id)
		if err != nil {
			return nil, err
		}
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		raft, err := freeAddr()
		if err != nil {
			return nil, err
		}
		args := []string{"--svid-dir", sd, "--data-dir", filepath.Join(dir, id+"-data"), "--listen", addr, "--raft-listen", raft, "--log-level", "warn"}
		if i == 1 {
			if n.brokerMetrics, err = freeAddr(); err != nil {
				return nil, err
			}
			args = append(args, "--bootstrap", "--metrics-listen", n.brokerMetrics)
		} else {
			args = append(args, "--join", n.brokers[0].addr)
		}
		p, err := n.start(brokerBin, id, addr, args)
		if err != nil {
			return nil, err
		}
		n.brokers = append(n.brokers, p)
		if err := n.waitServing(ctx, p); err != nil {
			return nil, err
		}
		progress.report("starting brokers", i, brokers)
	}
	for _, id := range ids {
		sd, err := svid(pki.RoleParticipant, id)
		if err != nil {
			return nil, err
		}
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		p, err := n.start(memberBin, id, addr, []string{"--svid-dir", sd, "--data-dir", filepath.Join(dir, id+"-data"), "--listen", addr, "--log-level", "warn"})
		if err != nil {
			return nil, err
		}
		n.members = append(n.members, p)
	}
	for _, p := range n.members {
		if err := n.register(ctx, p.id, p.addr); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func (n *procNetwork) start(bin, id, addr string, args []string) (*proc, error) {
	logf, err := os.Create(filepath.Join(n.dir, id+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("bench: start %s: %w", id, err)
	}
	p := &proc{id: id, addr: addr, cmd: cmd, done: make(chan error, 1)}
	go func() {
		p.done <- cmd.Wait()
		logf.Close()
	}()
	return p, nil
}

// waitServing waits until broker p's health service says SERVING: it has
// caught up with the cluster and holds a key to issue links with (until it
// does, it refuses discovery queries).
func (n *procNetwork) waitServing(ctx context.Context, p *proc) error {
	cc, err := n.dialBroker(p.addr, n.operator)
	if err != nil {
		return err
	}
	defer cc.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := healthpb.NewHealthClient(cc).Check(cctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("health %v", resp.Status)
		}
		select {
		case err := <-p.done:
			return fmt.Errorf("bench: %s exited: %v (see %s)", p.id, err, filepath.Join(n.dir, p.id+".log"))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("bench: %s not serving: %w", p.id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// register puts a member into the directory, retrying while the cluster
// settles.
func (n *procNetwork) register(ctx context.Context, id, endpoint string) error {
	conn, err := client.Dial(n.brokerAddrs(), n.operator, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := conn.Directory().RegisterParticipant(cctx, &qhinv1.RegisterParticipantRequest{
			Participant: &qhinv1.Participant{Id: id, Organization: "Bench " + id, Endpoint: endpoint,
				InitiatePurposes: []string{"all"}, RespondPurposes: []string{"all"}}, RequestId: "register-" + id})
		cancel()
		if err == nil || status.Code(err) == codes.AlreadyExists {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("bench: register %s: %w", id, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// setStatus sets a member's status in the directory.
func (n *procNetwork) setStatus(ctx context.Context, id string, st qhinv1.ParticipantStatus) error {
	conn, err := client.Dial(n.brokerAddrs(), n.operator, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = conn.Directory().SetParticipantStatus(cctx, &qhinv1.SetParticipantStatusRequest{ParticipantId: id, Status: st, Reason: "bench"})
	if err != nil {
		return fmt.Errorf("bench: set %s %v: %w", id, st, err)
	}
	return nil
}

func (n *procNetwork) brokerAddrs() []string {
	var out []string
	for _, b := range n.brokers {
		out = append(out, b.addr)
	}
	return out
}

// identity mints an SVID for a caller this process plays.
func (n *procNetwork) identity(role pki.Role, name string) (pki.Source, error) {
	s, err := n.ca.IssueIdentity(role, name, 12*time.Hour, "127.0.0.1")
	if err != nil {
		return nil, err
	}
	return pki.StaticSource{SVID: s, Bundle: n.ca.Bundle()}, nil
}

// dialBroker connects to one broker only, as src.
func (n *procNetwork) dialBroker(addr string, src pki.Source, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return grpc.NewClient("passthrough:///"+addr, append([]grpc.DialOption{
		grpc.WithTransportCredentials(pki.ClientCredentials(src, pki.AuthorizeRoles(n.td, pki.RoleBroker))),
	}, opts...)...)
}

// stop ends every process (SIGTERM, then SIGKILL after a few seconds).
func (n *procNetwork) stop() {
	all := append(append([]*proc{}, n.members...), n.brokers...)
	for _, p := range all {
		p.cmd.Process.Signal(os.Interrupt)
	}
	for _, p := range all {
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// procSample is one reading of a process's /proc entries.
type procSample struct {
	RSS uint64        // VmRSS, bytes
	CPU time.Duration // user + system
}

// readProc reads VmRSS from /proc/PID/status and utime+stime from
// /proc/PID/stat.
func readProc(pid int) (procSample, error) {
	var s procSample
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				s.RSS = kb << 10
			}
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	s.CPU = time.Duration(ut+st) * time.Second / ticks
	return s, nil
}
