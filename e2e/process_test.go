package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// TestProcesses_ReadmeWalkthrough builds the three commands and runs the
// README's "Run separate processes" and "Back up and restore" sections with
// them: a CA and SVIDs from qhinctl pki, records from qhinctl import, three
// qhin-broker processes in a Raft cluster, two qhin-participant processes,
// directory registration, a query through qhinctl and through the member's
// EHR relay, then a snapshot restored into a new cluster.
func TestProcesses_ReadmeWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the commands")
	}
	bin := buildCommands(t)
	dir := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, "qhinctl"), args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "QHIN_CONFIG="+filepath.Join(dir, "qhinctl.yaml"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("qhinctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// runUntil retries a command while the cluster is still forming.
	runUntil := func(args ...string) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			cmd := exec.Command(filepath.Join(bin, "qhinctl"), args...)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "QHIN_CONFIG="+filepath.Join(dir, "qhinctl.yaml"))
			out, err := cmd.CombinedOutput()
			if err == nil {
				return string(out)
			}
			if time.Now().After(deadline) {
				t.Fatalf("phase %q: timed out after 30s: %v\n%s", "qhinctl "+strings.Join(args, " "), err, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	var procs []*exec.Cmd
	start := func(name string, args ...string) *exec.Cmd {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Dir = dir
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, len(procs))))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
		return cmd
	}
	stop := func(cmd *exec.Cmd) {
		t.Helper()
		if cmd.ProcessState != nil {
			return
		}
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s did not stop cleanly: %v", filepath.Base(cmd.Path), err)
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("phase %q: timed out after 20s", "stop "+filepath.Base(cmd.Path)+" with SIGTERM")
		}
	}
	t.Cleanup(func() {
		for _, p := range procs {
			if p.ProcessState == nil {
				p.Process.Kill()
				p.Wait()
			}
		}
	})
	port := freePorts(t, 12)

	run("pki", "init", "--trust-domain", "qhin.example.org", "--out", "ca")
	for _, id := range []string{"broker/b1", "broker/b2", "broker/b3", "broker/b4", "participant/p1", "participant/p2", "participant/p3", "operator/alice"} {
		run("pki", "issue", "--ca", "ca", "--id", "spiffe://qhin.example.org/"+id, "--out", id[strings.Index(id, "/")+1:])
	}
	// The README's query asks for a person p2 and p3 both hold, as each
	// import prints.
	query := readmeCommand(t, "Run separate processes", "qhinctl query patients ")
	shared := &qhinv1.Demographics{Given: flagValue(query, "given"), Family: flagValue(query, "family"),
		BirthDate: flagValue(query, "birth-date"), Gender: flagValue(query, "gender")}
	for _, p := range []string{"p1", "p2", "p3"} {
		out := run("import", "synthetic", "--data-dir", p+"-data", "--participant", p, "--members", "p1,p2,p3", "--patients", "500")
		if printed := printedPerson(out); !proto.Equal(printed, shared) {
			t.Fatalf("phase %q: the README queries %v; qhinctl import synthetic printed:\n%s", "import "+p, shared, out)
		}
	}

	if out := run("locator", "keygen", "--out", "linkage.key"); !strings.Contains(out, "linkage key") {
		t.Fatalf("keygen said %q", out)
	}

	brokers := []string{port[0], port[1], port[2]}
	start("qhin-broker", "--svid-dir", "b1", "--data-dir", "b1-data", "--listen", brokers[0], "--raft-listen", port[3], "--bootstrap")
	start("qhin-broker", "--svid-dir", "b2", "--data-dir", "b2-data", "--listen", brokers[1], "--raft-listen", port[4], "--join", brokers[0])
	start("qhin-broker", "--svid-dir", "b3", "--data-dir", "b3-data", "--listen", brokers[2], "--raft-listen", port[5], "--join", brokers[0])
	start("qhin-participant", "--svid-dir", "p1", "--data-dir", "p1-data", "--listen", port[6],
		"--broker", strings.Join(brokers, ","), "--api-listen", "unix:p1-ehr.sock", "--linkage-key-file", "linkage.key")
	start("qhin-participant", "--svid-dir", "p2", "--data-dir", "p2-data", "--listen", port[7],
		"--broker", strings.Join(brokers, ","), "--linkage-key-file", "linkage.key")
	start("qhin-participant", "--svid-dir", "p3", "--data-dir", "p3-data", "--listen", port[11],
		"--broker", strings.Join(brokers, ","), "--linkage-key-file", "linkage.key")

	cfg := fmt.Sprintf("brokers: [%s]\noperator: {svid_dir: alice}\nparticipant: {id: p1, svid_dir: p1}\nlinkage_key_file: linkage.key\n", strings.Join(brokers, ", "))
	if err := os.WriteFile(filepath.Join(dir, "qhinctl.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	runUntil("directory", "register", "p1", "--organization", "Riverside General", "--endpoint", port[6],
		"--initiate-purposes", "all", "--respond-purposes", "all")
	runUntil("directory", "register", "p2", "--organization", "Lakeview Clinic", "--endpoint", port[7],
		"--initiate-purposes", "all", "--respond-purposes", "all")
	runUntil("directory", "register", "p3", "--organization", "Northern Valley HIE", "--endpoint", port[11],
		"--initiate-purposes", "all", "--respond-purposes", "all")
	runUntil("locator", "keys", "add", "--key-file", "linkage.key")

	var st qhinv1.StatusResponse
	waitFor(t, 30*time.Second, "three members in cluster status", func() bool {
		if err := protoUnmarshalJSON(run("cluster", "status", "-o", "json"), &st); err != nil {
			return false
		}
		return len(st.Members) == 3 && st.LeaderId != ""
	})

	// An operator adds a running broker, then takes it out again.
	b4 := start("qhin-broker", "--svid-dir", "b4", "--data-dir", "b4-data", "--listen", port[9], "--raft-listen", port[10])
	run("cluster", "join", "--node-id", "b4", "--raft-addr", port[10])
	waitFor(t, 30*time.Second, "four members, b4 announced", func() bool {
		if err := protoUnmarshalJSON(run("cluster", "status", "-o", "json"), &st); err != nil {
			return false
		}
		return len(st.Members) == 4 && st.Members[3].GrpcAddr == port[9] && st.Members[3].AppliedIndex > 0
	})
	run("cluster", "remove", "b4")
	if err := protoUnmarshalJSON(run("cluster", "status", "-o", "json"), &st); err != nil || len(st.Members) != 3 {
		t.Fatalf("after removing b4: %v members (%v)", len(st.Members), err)
	}
	stop(b4)

	// Every member publishes its patients' tokens.
	var loc qhinv1.LocatorStatusResponse
	waitFor(t, 60*time.Second, "every member's tokens in the locator", func() bool {
		if err := protoUnmarshalJSON(run("locator", "status", "-o", "json"), &loc); err != nil {
			return false
		}
		return len(loc.Keys) == 1 && len(loc.Members) == 3
	})

	// The README's query, as p1, finds one person with a link at p2 and
	// one at p3, asking only them.
	var found qhinv1.DiscoverPatientsResponse
	out := run(append(query[1:], "-o", "json")...)
	if err := protoUnmarshalJSON(out, &found); err != nil {
		t.Fatalf("query output: %v\n%s", err, out)
	}
	if len(found.Persons) != 1 || !linksAt(found.Persons[0], "p2", "p3") {
		t.Fatalf("the README's query as p1 did not find one person at p2 and p3: %s", out)
	}

	// The same query through p1's EHR API: a unix socket only its owner
	// may open (the sidecar's user, here the test's).
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "p1-ehr.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	viaRelay, err := qhinv1.NewGatewayClient(conn).DiscoverPatients(ctx, &qhinv1.DiscoverPatientsRequest{
		PurposeOfUse: "T-TREAT", Requester: requester(), Demographics: shared,
	})
	if err != nil {
		t.Fatalf("query through the EHR relay: %v", err)
	}
	if len(viaRelay.Persons) == 0 || viaRelay.Persons[0].Links[0].PatientId != found.Persons[0].Links[0].PatientId {
		t.Errorf("relay answer %v differs from qhinctl's %v", viaRelay.Persons, found.Persons)
	}

	// Back up, lose the cluster, restore into a new one: the README's
	// "Back up and restore" block, command by command, each run once.
	run("cluster", "snapshot", "save", "backup.qsnap")
	for _, p := range procs {
		stop(p)
	}
	nb1 := start("qhin-broker", "--svid-dir", "b1", "--data-dir", "new-b1", "--listen", brokers[0], "--raft-listen", port[3], "--bootstrap")
	// Right after the start: restore waits for the new cluster's leader.
	out = run("cluster", "snapshot", "restore", "backup.qsnap")
	if !strings.Contains(out, "restored backup.qsnap") {
		t.Errorf("restore said %q", out)
	}
	nb2 := start("qhin-broker", "--svid-dir", "b2", "--data-dir", "new-b2", "--listen", brokers[1], "--raft-listen", port[4], "--join", brokers[0])
	waitFor(t, 30*time.Second, "b2 joined the restored cluster and serves", func() bool {
		if err := protoUnmarshalJSON(run("cluster", "status", "-o", "json"), &st); err != nil || len(st.Members) != 2 {
			return false
		}
		for _, m := range st.Members {
			if !m.Serving {
				return false
			}
		}
		return true
	})
	var list qhinv1.ListParticipantsResponse
	if err := protoUnmarshalJSON(run("directory", "list", "--consistent", "-o", "json"), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Participants) != 3 {
		t.Errorf("restored directory holds %d participants, want 3", len(list.Participants))
	}
	stop(nb2)
	stop(nb1)
}

// freePorts reserves n loopback addresses. They are released before use, so
// another process could take one in between; on a test machine that is rare.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	var ls []net.Listener
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// printedPerson returns the person whose flags qhinctl import synthetic
// printed on a line of their own, or nil.
func printedPerson(out string) *qhinv1.Demographics {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "--given ") {
			w, err := shellWords(strings.TrimSpace(line))
			if err != nil {
				return nil
			}
			return &qhinv1.Demographics{Given: flagValue(w, "given"), Family: flagValue(w, "family"),
				BirthDate: flagValue(w, "birth-date"), Gender: flagValue(w, "gender")}
		}
	}
	return nil
}

func protoUnmarshalJSON(s string, m proto.Message) error {
	return protojson.Unmarshal([]byte(strings.TrimSpace(s)), m)
}
