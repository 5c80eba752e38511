//go:build unix

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// TestDev_KillABrokerAndKeepQuerying runs `qhinctl dev` with the built
// commands (each of which prints its --version first), as make run does, and
// walks the README tour's failover step:
// every node is its own process with a pid; the leader is killed by its pid;
// queries still succeed and cluster status shows it unreachable; Enter
// starts it again. Then Ctrl-C stops every node, a second start keeps the
// state, and (on Linux) killing qhinctl dev itself leaves no node behind.
func TestDev_KillABrokerAndKeepQuerying(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the commands")
	}
	bin := buildCommands(t)
	checkVersions(t, bin)
	dir := t.TempDir()
	base := freeBasePort(t)
	qhinctl := func(args ...string) (string, error) {
		cmd := exec.Command(filepath.Join(bin, "qhinctl"), args...)
		cmd.Env = append(os.Environ(), "QHIN_CONFIG="+filepath.Join(dir, "qhinctl.yaml"), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	dev := startDev(t, bin, dir, base)
	dev.waitFor(t, "first start: network up", "Press Enter here")
	pids := dev.pids(t, dir)
	for id, pid := range pids {
		if !dev.tableShows(id, pid) {
			t.Errorf("qhinctl dev's table does not show %s with pid %d:\n%s", id, pid, dev.out.String())
		}
	}
	query := dev.exampleQuery(t)

	// The example person is registered at p2 and p3: a query as p1 finds
	// one person with a link at each.
	ask := func(phase string) {
		t.Helper()
		var resp qhinv1.DiscoverPatientsResponse
		out, err := qhinctl(append(query, "-o", "json")...)
		if err == nil {
			err = protoUnmarshalJSON(out, &resp)
		}
		if err != nil {
			t.Fatalf("phase %q: query: %v\n%s", phase, err, out)
		}
		if len(resp.Persons) != 1 || !linksAt(resp.Persons[0], "p2", "p3") {
			t.Fatalf("phase %q: want one person linked at p2 and p3, got %s", phase, out)
		}
	}
	ask("query before the kill")
	documentsByName(t, qhinctl, query, dir)
	auditOfTheTour(t, qhinctl)
	runReadmeFHIR(t, bin, dir, base)
	runReadmeGovernance(t, bin, dir)
	checkDevRoutesByTheLocator(t, base, func() { ask("query routed by the record locator") })

	status := func() (*qhinv1.StatusResponse, error) {
		var st qhinv1.StatusResponse
		out, err := qhinctl("cluster", "status", "-o", "json")
		if err != nil {
			return nil, fmt.Errorf("%v: %s", err, out)
		}
		return &st, protoUnmarshalJSON(out, &st)
	}
	st, err := status()
	if err != nil {
		t.Fatalf("phase %q: %v", "cluster status before the kill", err)
	}
	victim := st.LeaderId
	if pids[victim] == 0 {
		t.Fatalf("phase %q: leader %q has no pid (%v)", "cluster status before the kill", victim, pids)
	}

	// kill PID, as the README says: the leader goes away.
	if err := syscall.Kill(pids[victim], syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the killed broker "+victim+" exits", func() bool { return !processAlive(pids[victim]) })
	dev.waitFor(t, "qhinctl dev reports "+victim+" stopped", victim+" (pid "+strconv.Itoa(pids[victim])+") stopped")
	ask("query after the kill")
	pollUntil(t, 30*time.Second, "cluster status shows "+victim+" unreachable and a new leader", func() error {
		st, err := status()
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.NodeId == victim && m.State == qhinv1.NodeState_NODE_STATE_UNREACHABLE && st.LeaderId != "" && st.LeaderId != victim {
				return nil
			}
		}
		return fmt.Errorf("status: %v", st)
	})

	// Enter starts it again; it catches up.
	dev.enter(t)
	dev.waitFor(t, "qhinctl dev restarts "+victim, victim+" is serving again.")
	pollUntil(t, 30*time.Second, "cluster status shows "+victim+" back", func() error {
		st, err := status()
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.NodeId == victim && m.State != qhinv1.NodeState_NODE_STATE_UNREACHABLE && m.AppliedIndex > 0 {
				return nil
			}
		}
		return fmt.Errorf("status: %v", st)
	})
	ask("query after the restart")
	pids = dev.pids(t, dir)

	// Ctrl-C stops every node, and qhinctl dev exits cleanly.
	dev.interrupt(t)
	for id, pid := range pids {
		if processAlive(pid) {
			t.Errorf("phase %q: %s (pid %d) still runs", "after Ctrl-C", id, pid)
		}
	}

	// A second start keeps the records and the directory.
	records := dev.records()
	dev = startDev(t, bin, dir, base)
	dev.waitFor(t, "second start: network up", "Press Enter here")
	if got := dev.records(); got != records || records == "" {
		t.Errorf("records after the second start %q, want %q as before", got, records)
	}
	out, err := qhinctl("directory", "list", "-o", "json")
	var list qhinv1.ListParticipantsResponse
	if err == nil {
		err = protoUnmarshalJSON(out, &list)
	}
	if err != nil || len(list.Participants) != 3 {
		t.Fatalf("phase %q: directory after the second start: %v\n%s", "second start", err, out)
	}
	ask("query after the second start")

	if runtime.GOOS != "linux" {
		return // only Linux stops the nodes when their parent is killed
	}
	pids = dev.pids(t, dir)
	dev.cmd.Process.Kill()
	dev.cmd.Wait()
	waitFor(t, 30*time.Second, "every node exits after qhinctl dev is killed", func() bool {
		for _, pid := range pids {
			if processAlive(pid) {
				return false
			}
		}
		return true
	})
}

// checkVersions runs --version on each built command: it names the command
// and the module it was built from, and exits 0.
func checkVersions(t *testing.T, bin string) {
	t.Helper()
	for _, name := range []string{"qhinctl", "qhin-broker", "qhin-participant"} {
		out, err := exec.Command(filepath.Join(bin, name), "--version").CombinedOutput()
		if err != nil {
			t.Fatalf("phase %q: %v\n%s", name+" --version", err, out)
		}
		got := string(out)
		if !strings.HasPrefix(got, name+" ") || !strings.Contains(got, "module:   github.com/openqhin/openqhin\n") || !strings.Contains(got, "go:       go") {
			t.Errorf("%s --version printed:\n%s", name, got)
		}
	}
}

// devRun is a running qhinctl dev.
type devRun struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *syncBuffer
}

func startDev(t *testing.T, bin, dir string, base int) *devRun {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "qhinctl"), "dev", "--dir", dir, "--base-port", strconv.Itoa(base), "--patients", "300")
	d := &devRun{cmd: cmd, out: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	var err error
	if d.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		}
	})
	return d
}

// waitFor waits until qhinctl dev has printed text.
func (d *devRun) waitFor(t *testing.T, phase, text string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(d.out.String(), text) {
		if d.cmd.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("phase %q: qhinctl dev did not print %q within 2m:\n%s\nnetwork.log:\n%s", phase, text, d.out.String(), tail(d.logPath(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *devRun) logPath() string {
	return filepath.Join(d.cmd.Args[3], "network.log") // dev --dir DIR
}

// pids reads every node's pid file.
func (d *devRun) pids(t *testing.T, dir string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, node := range []string{"brokers/b1", "brokers/b2", "brokers/b3", "participants/p1", "participants/p2", "participants/p3"} {
		b, err := os.ReadFile(filepath.Join(dir, node, "pid"))
		if err != nil {
			t.Fatalf("phase %q: %v", "read pid files", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("phase %q: %s: %v", "read pid files", node, err)
		}
		out[filepath.Base(node)] = pid
	}
	return out
}

// tableShows reports whether the node table has the node's line with pid.
func (d *devRun) tableShows(id string, pid int) bool {
	for _, line := range strings.Split(d.out.String(), "\n") {
		f := strings.Fields(line)
		if len(f) > 3 && f[0] == id && strings.Contains(line, " "+strconv.Itoa(pid)+" ") {
			return true
		}
	}
	return false
}

var recordsColumn = regexp.MustCompile(`(?m)^(p\d+) .* (\d+ patients, \d+ documents)`)

// records returns the RECORDS column of the node table: what every
// participant holds.
func (d *devRun) records() string {
	var out []string
	for _, m := range recordsColumn.FindAllStringSubmatch(d.out.String(), -1) {
		out = append(out, m[1]+": "+m[2])
	}
	return strings.Join(out, "; ")
}

// exampleQuery returns the arguments of the example query qhinctl dev
// printed.
func (d *devRun) exampleQuery(t *testing.T) []string {
	t.Helper()
	for _, line := range strings.Split(d.out.String(), "\n") {
		if strings.Contains(line, " query patients ") {
			words, err := shellWords(line)
			if err != nil || len(words) < 2 {
				t.Fatalf("example query %q: %v", line, err)
			}
			return words[1:] // without the qhinctl path
		}
	}
	t.Fatalf("qhinctl dev printed no example query:\n%s", d.out.String())
	return nil
}

func (d *devRun) enter(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(d.stdin, "\n"); err != nil {
		t.Fatalf("phase %q: %v", "press Enter", err)
	}
}

// interrupt sends qhinctl dev SIGINT, as Ctrl-C does, and waits for it to
// stop every node and exit 0.
func (d *devRun) interrupt(t *testing.T) {
	t.Helper()
	d.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("phase %q: qhinctl dev exited with %v:\n%s", "Ctrl-C", err, d.out.String())
		}
	case <-time.After(60 * time.Second):
		d.cmd.Process.Kill()
		<-done
		t.Fatalf("phase %q: qhinctl dev still running 60s after SIGINT:\n%s", "Ctrl-C", d.out.String())
	}
	if !strings.Contains(d.out.String(), "Stopped. State is kept") {
		t.Errorf("phase %q: no goodbye:\n%s", "Ctrl-C", d.out.String())
	}
}

// freeBasePort finds a base port whose network ports (base+1… through
// base+53) are all free just now.
func freeBasePort(t *testing.T) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		base := 20000 + (os.Getpid()*7919+try*997)%40000
		var ls []net.Listener
		ok := true
		for _, off := range []int{1, 2, 3, 11, 12, 13, 21, 22, 23, 31, 32, 33, 41, 42, 43, 51, 52, 53} {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+off))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free range of ports for qhinctl dev")
	return 0
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// syncBuffer is a bytes.Buffer safe for a process's writes and the test's
// reads.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// processAlive reports whether pid is a live process: neither gone nor a
// zombie left for a parent that does not reap it.
func processAlive(pid int) bool {
	if runtime.GOOS == "linux" {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return false
		}
		// "pid (comm) S …": the state follows the last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
	}
	return syscall.Kill(pid, 0) == nil
}

// documentsByName walks the tour's document step: the links that query
// patients printed, by the names it printed them under (PARTICIPANT/ID),
// list the documents, and a document's printed name retrieves it. The
// brokers issue opaque links; qhinctl remembers them under those names.
func documentsByName(t *testing.T, qhinctl func(...string) (string, error), query []string, dir string) {
	t.Helper()
	phase := "documents by the names query patients printed"
	out, err := qhinctl(query...) // the table, as a person reads it
	if err != nil {
		t.Fatalf("phase %q: query: %v\n%s", phase, err, out)
	}
	var names []string
	for _, f := range strings.Fields(out) {
		if strings.HasPrefix(f, "p2/") || strings.HasPrefix(f, "p3/") {
			names = append(names, f)
		}
	}
	if len(names) != 2 {
		t.Fatalf("phase %q: want a link at p2 and one at p3 in:\n%s", phase, out)
	}
	npi := query[slices.Index(query, "--requester-npi")+1]
	args := []string{"query", "documents", "--purpose", "T-TRTMNT", "--requester-npi", npi, "-o", "json"}
	for _, n := range names {
		args = append(args, "--link", n)
	}
	out, err = qhinctl(args...)
	var docs qhinv1.QueryDocumentsResponse
	if err == nil {
		err = protoUnmarshalJSON(out, &docs)
	}
	if err != nil || len(docs.Documents) == 0 {
		t.Fatalf("phase %q: query documents: %v\n%s", phase, err, out)
	}
	d := docs.Documents[0]
	file := filepath.Join(dir, "doc.out")
	out, err = qhinctl("retrieve", "--link", d.SourceParticipantId+"/"+d.Id, "--out", file, "--purpose", "T-TRTMNT", "--requester-npi", npi)
	if err != nil || !strings.Contains(out, "verified") {
		t.Fatalf("phase %q: retrieve: %v\n%s", "retrieve by the name query documents printed", err, out)
	}
	if st, err := os.Stat(file); err != nil || st.Size() != d.Size {
		t.Fatalf("phase %q: %s: %v (want %d bytes)", "retrieve by the name query documents printed", file, err, d.Size)
	}
	// A name no query printed is refused by qhinctl, and a made-up opaque
	// link by the brokers.
	if out, err := qhinctl("query", "documents", "--link", "p2/p2-999999", "--purpose", "T-TRTMNT", "--requester-npi", npi); err == nil || !strings.Contains(out, "no link of that name") {
		t.Errorf("phase %q: a name no query printed: %v\n%s", phase, err, out)
	}
	if out, err := qhinctl("query", "documents", "--link", strings.Repeat("A", 80), "--purpose", "T-TRTMNT", "--requester-npi", npi); err == nil || !strings.Contains(out, "InvalidArgument: links[0].link") {
		t.Errorf("phase %q: a made-up link: %v\n%s", phase, err, out)
	}
}

// auditOfTheTour reads what the tour left in the ledgers: p2 recorded the
// documents it listed for p1, every ledger verifies, and the FHIR export is
// one AuditEvent per line.
func auditOfTheTour(t *testing.T, qhinctl func(...string) (string, error)) {
	t.Helper()
	phase := "audit of the tour"
	out, err := qhinctl("audit", "list", "--node", "p2", "--action", "documents")
	if err != nil || !strings.Contains(out, "documents") || !strings.Contains(out, "T-TRTMNT") {
		t.Fatalf("phase %q: p2's ledger: %v\n%s", phase, err, out)
	}
	out, err = qhinctl("audit", "verify", "--node", "b1,b2,b3,p1,p2,p3", "-o", "json")
	if err != nil || strings.Count(out, `"ok":true`) != 6 {
		t.Fatalf("phase %q: verify: %v\n%s", phase, err, out)
	}
	out, err = qhinctl("audit", "list", "--fhir", "--limit", "5")
	if err != nil {
		t.Fatalf("phase %q: FHIR export: %v\n%s", phase, err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev struct {
			ResourceType string `json:"resourceType"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.ResourceType != "AuditEvent" {
			t.Fatalf("phase %q: FHIR export line %q: %v", phase, line, err)
		}
	}
}

// checkDevRoutesByTheLocator checks that qhinctl dev's brokers route
// discovery by the record locator unless told otherwise: once the members
// have published their tokens, the example query (qhinctl adds its tokens
// from the config's linkage key) is counted as targeted by a broker's
// routing metric. A network routing by broadcast never counts one.
func checkDevRoutesByTheLocator(t *testing.T, base int, ask func()) {
	t.Helper()
	targeted := func() (float64, error) {
		sum := 0.0
		for i := 1; i <= 3; i++ {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", base+30+i))
			if err != nil {
				return 0, err
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return 0, err
			}
			v, ok := metricValue(string(b), "qhin_discovery_routes_total", `decision="targeted"`)
			if !ok {
				return 0, fmt.Errorf("broker b%d exports no targeted routing count", i)
			}
			sum += v
		}
		return sum, nil
	}
	pollUntil(t, 60*time.Second, "a query of qhinctl dev's network routed by the record locator", func() error {
		ask()
		n, err := targeted()
		if err == nil && n == 0 {
			err = errors.New("no targeted query yet")
		}
		return err
	})
}
