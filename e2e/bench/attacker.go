package bench

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // the codec floodResponder defers to
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/openqhin/openqhin/broker/audit"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// AttackEnv is what an attacker needs to know of the network it attacks:
// files only, so that it can run in a process of its own.
type AttackEnv struct {
	// Broker is the gRPC address of the attacked broker.
	Broker string `json:"broker"`
	// Member holds the SVID (svid.pem, svid.key, bundle.pem) of the member
	// the attacker queries as; Hostile the SVID of the hostile member
	// whose Responder it serves at HostileListen.
	Member        string `json:"member"`
	Hostile       string `json:"hostile"`
	HostileListen string `json:"hostile_listen"`
	// Document is a large document held by member p3, of the patient
	// whose demographics Patient holds (protojson). The brokers take only
	// the links they issued, so the attacker finds its links as any member
	// does: it discovers Patient, then lists the documents of p3's record.
	Document string          `json:"document"`
	Patient  json.RawMessage `json:"patient"`
}

// attackEnv writes the attacker's identities into the network's directory.
func (n *procNetwork) attackEnv(broker, hostileListen, doc string, patient *qhinv1.Demographics) (AttackEnv, error) {
	pj, err := protojson.Marshal(patient)
	if err != nil {
		return AttackEnv{}, err
	}
	env := AttackEnv{Broker: broker, HostileListen: hostileListen, Document: doc, Patient: pj,
		Member: filepath.Join(n.dir, "attacker-p2"), Hostile: filepath.Join(n.dir, "attacker-p9")}
	for dir, name := range map[string]string{env.Member: "p2", env.Hostile: "p9"} {
		s, err := n.ca.IssueIdentity(pki.RoleParticipant, name, 12*time.Hour, "127.0.0.1")
		if err != nil {
			return env, err
		}
		if err := pki.WriteSVID(dir, s, n.ca.Bundle()); err != nil {
			return env, err
		}
	}
	return env, nil
}

// patient returns the demographics of the patient whose record at p3 holds
// the large document.
func (env AttackEnv) patient() (*qhinv1.Demographics, error) {
	d := new(qhinv1.Demographics)
	if err := protojson.Unmarshal(env.Patient, d); err != nil {
		return nil, fmt.Errorf("attack env: patient: %w", err)
	}
	return d, nil
}

// dialAs connects to the attacked broker only, as the member in svidDir,
// taking little ahead of what it reads (a static 64 KiB window), so that
// what it holds is small and a never-read retrieval is the broker's
// problem, not the attacker's.
func (env AttackEnv) dial() (*grpc.ClientConn, error) {
	src, err := pki.LoadDir(env.Member)
	if err != nil {
		return nil, err
	}
	self, err := pki.SourceIdentity(src)
	if err != nil {
		return nil, err
	}
	return grpc.NewClient("passthrough:///"+env.Broker,
		grpc.WithTransportCredentials(pki.ClientCredentials(src, pki.AuthorizeRoles(self.ID.TrustDomain(), pki.RoleBroker))),
		grpc.WithStaticStreamWindowSize(64<<10), grpc.WithStaticConnWindowSize(64<<10))
}

// describeAttack says what the named attack does.
func describeAttack(name string) (string, error) {
	switch name {
	case "flood-200k":
		return floodDescription(200_000), nil
	case "flood-15k":
		return floodDescription(15_000), nil
	case "stalled-handshakes":
		return stalledDescription(100, 50), nil
	case "label-flood":
		return labelFloodDescription, nil
	case "links-150k":
		return manyLinksDescription, nil
	case "never-read":
		return neverReadDescription, nil
	case "oversized":
		return oversizedDescription, nil
	}
	return "", fmt.Errorf("unknown attack %q; known: %s", name, strings.Join(Attacks, ", "))
}

// newAttack builds the named attack.
func newAttack(name string, env AttackEnv) (attack, error) {
	if _, err := describeAttack(name); err != nil {
		return attack{}, err
	}
	var a attack
	var cc *grpc.ClientConn
	switch name {
	case "flood-200k":
		a = floodAttack(env, 200_000)
	case "flood-15k":
		a = floodAttack(env, 15_000)
	case "stalled-handshakes":
		a = stalledAttack(env.Broker, 100, 50)
	default:
		var err error
		if cc, err = env.dial(); err != nil {
			return a, err
		}
		a = map[string]func(*grpc.ClientConn, AttackEnv) attack{
			"label-flood": labelFloodAttack, "links-150k": manyLinksAttack, "never-read": neverReadAttack, "oversized": oversizedAttack,
		}[name](cc, env)
	}
	if a.prepare == nil {
		a.prepare = func(context.Context) error { return nil }
	}
	inner := a.close
	a.close = func() {
		if inner != nil {
			inner()
		}
		if cc != nil {
			cc.Close()
		}
	}
	return a, nil
}

// RunAttacker runs one attack in this process under the parent's control,
// over in and out (the qhinctl bench attacker command's stdin and stdout):
// it prepares the attack and says "ready"; on "go" it starts it and says
// "started"; on "stop" (or the end of in) it stops it and writes a JSON
// report of the calls it made.
func RunAttacker(ctx context.Context, name string, env AttackEnv, in io.Reader, out io.Writer) error {
	a, err := newAttack(name, env)
	if err != nil {
		return err
	}
	defer a.close()
	if err := a.prepare(ctx); err != nil {
		return err
	}
	lines := bufio.NewScanner(in)
	next := func() string {
		if lines.Scan() {
			return strings.TrimSpace(lines.Text())
		}
		return "stop"
	}
	fmt.Fprintln(out, "ready")
	if cmd := next(); cmd != "go" {
		return fmt.Errorf("attacker: got %q, want go", cmd)
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := a.start(actx)
	fmt.Fprintln(out, "started")
	next()
	cancel()
	calls, detail := stop()
	return json.NewEncoder(out).Encode(attackReport{Calls: calls, Detail: detail, Description: a.description})
}

type attackReport struct {
	Description string `json:"description"`
	Calls       int64  `json:"calls"`
	Detail      string `json:"detail"`
}

// childAttack is an attack run by a process of its own.
type childAttack struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	stdout  *os.File
	lines   *bufio.Scanner
	desc    string
	waited  chan error
	logPath string
}

// logTail is the end of the attacker's log (its stderr), to explain its
// failure: the network's directory, where the log is, is removed when the
// scenario ends.
func (c *childAttack) logTail() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return "; the attacker's log ends: " + string(bytes.TrimSpace(b))
}

func startAttackerProcess(ctx context.Context, command []string, name string, env AttackEnv, logPath string) (attackRunner, error) {
	envJSON, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, command[0], append(slices.Clone(command[1:]), "--attack", name, "--env", string(envJSON))...)
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	// The attacker's stdout is a pipe of our own, not cmd.StdoutPipe: Wait
	// closes that one as soon as the process exits, which may be before
	// the report the attacker wrote last has been read.
	stdout, w, err := os.Pipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	cmd.Stdout = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		stdout.Close()
		logf.Close()
		return nil, fmt.Errorf("start attacker: %w", err)
	}
	c := &childAttack{cmd: cmd, stdin: stdin, stdout: stdout, lines: bufio.NewScanner(stdout), waited: make(chan error, 1), logPath: logPath}
	c.lines.Buffer(make([]byte, 0, 64<<10), 1<<20)
	go func() {
		c.waited <- cmd.Wait()
		logf.Close()
	}()
	if err := c.expect("ready"); err != nil {
		c.close()
		return nil, fmt.Errorf("%w%s", err, c.logTail())
	}
	c.desc, _ = describeAttack(name)
	return c, nil
}

func (c *childAttack) expect(want string) error {
	if !c.lines.Scan() {
		return fmt.Errorf("attacker exited before saying %q: %v", want, c.lines.Err())
	}
	if got := c.lines.Text(); got != want {
		return fmt.Errorf("attacker said %q, want %q", got, want)
	}
	return nil
}

func (c *childAttack) description() string { return c.desc }
func (c *childAttack) pid() int            { return c.cmd.Process.Pid }

func (c *childAttack) begin() error {
	if _, err := fmt.Fprintln(c.stdin, "go"); err != nil {
		return err
	}
	return c.expect("started")
}

func (c *childAttack) end() (int64, string, error) {
	fmt.Fprintln(c.stdin, "stop")
	if !c.lines.Scan() {
		return 0, "", fmt.Errorf("attacker exited without a report (%v)%s", c.lines.Err(), c.logTail())
	}
	var r attackReport
	if err := json.Unmarshal(c.lines.Bytes(), &r); err != nil {
		return 0, "", fmt.Errorf("attacker report: %w", err)
	}
	return r.Calls, r.Detail, nil
}

func (c *childAttack) close() {
	c.stdin.Close()
	select {
	case <-c.waited:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.waited
	}
	c.stdout.Close()
}

// floodResponder is the hostile member: it answers every discovery query
// with n tiny candidates, encoded once (a hostile member prepares its
// flood; encoding it for every query would only measure the attacker's
// CPU).
type floodResponder struct {
	qhinv1.UnimplementedResponderServer
	answer atomic.Pointer[encodedAnswer]
	calls  atomic.Int64
}

type encodedAnswer struct {
	msg  *qhinv1.ResponderDiscoverPatientsResponse
	wire []byte
}

func (f *floodResponder) set(n int) {
	resp := &qhinv1.ResponderDiscoverPatientsResponse{Candidates: make([]*qhinv1.Candidate, n)}
	for i := range resp.Candidates {
		resp.Candidates[i] = &qhinv1.Candidate{PatientId: fmt.Sprintf("h%06d", i), Score: 1,
			Demographics: &qhinv1.Demographics{Given: "Ann", Family: "Lee", BirthDate: "1970-01-01", Gender: "female"}}
	}
	wire, _ := proto.Marshal(resp)
	f.answer.Store(&encodedAnswer{msg: resp, wire: wire})
}

func (f *floodResponder) DiscoverPatients(context.Context, *qhinv1.ResponderDiscoverPatientsRequest) (*qhinv1.ResponderDiscoverPatientsResponse, error) {
	f.calls.Add(1)
	return f.answer.Load().msg, nil
}

// Name, Marshal and Unmarshal make floodResponder the server's codec: the
// prepared answer goes out as its prepared bytes, everything else through
// the proto codec.
func (f *floodResponder) Name() string { return "proto" }

func (f *floodResponder) Marshal(v any) (mem.BufferSlice, error) {
	if a := f.answer.Load(); a != nil && v == any(a.msg) {
		return mem.BufferSlice{mem.SliceBuffer(a.wire)}, nil
	}
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (f *floodResponder) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2("proto").Unmarshal(data, v)
}

func floodDescription(candidates int) string {
	return fmt.Sprintf("hostile member p9 answers every discovery with %d tiny candidates (%.1f MB, encoded once)", candidates, float64(candidates)*55/1e6)
}

// floodAttack serves the hostile member p9: it answers with nothing until
// the attack starts.
func floodAttack(env AttackEnv, candidates int) attack {
	f := &floodResponder{}
	f.set(0)
	var srv *grpc.Server
	return attack{
		description: floodDescription(candidates),
		prepare: func(context.Context) error {
			src, err := pki.LoadDir(env.Hostile)
			if err != nil {
				return err
			}
			opts, err := pki.ServerConfig{Source: src, Policy: pki.DefaultPolicy, Roles: []pki.Role{pki.RoleBroker},
				Logger: slog.New(slog.DiscardHandler)}.ServerOptions()
			if err != nil {
				return err
			}
			srv = grpc.NewServer(append(opts, grpc.MaxSendMsgSize(64<<20), grpc.ForceServerCodecV2(f))...)
			qhinv1.RegisterResponderServer(srv, f)
			l, err := net.Listen("tcp", env.HostileListen)
			if err != nil {
				return err
			}
			go srv.Serve(l)
			return nil
		},
		start: func(context.Context) func() (int64, string) {
			f.set(candidates)
			before := f.calls.Load()
			return func() (int64, string) {
				f.set(0)
				return f.calls.Load() - before, "answers sent by p9"
			}
		},
		close: func() {
			if srv != nil {
				srv.Stop()
			}
		},
	}
}

func stalledDescription(sources, perSource int) string {
	return fmt.Sprintf("%d connections from %d loopback addresses, each sending 3 bytes of a TLS handshake, reopened as the broker closes them", sources*perSource, sources)
}

func stalledAttack(addr string, sources, perSource int) attack {
	return attack{
		description: stalledDescription(sources, perSource),
		start: func(ctx context.Context) func() (int64, string) {
			var dials, refusedFast atomic.Int64
			var wg sync.WaitGroup
			for s := range sources {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+s))}, Timeout: 5 * time.Second}
				for range perSource {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for ctx.Err() == nil {
							c, err := d.DialContext(ctx, "tcp", addr)
							if err != nil {
								time.Sleep(50 * time.Millisecond)
								continue
							}
							dials.Add(1)
							opened := time.Now()
							c.Write([]byte{0x16, 0x03, 0x01})
							stop := context.AfterFunc(ctx, func() { c.Close() })
							io.Copy(io.Discard, c)
							stop()
							c.Close()
							if time.Since(opened) < 100*time.Millisecond {
								refusedFast.Add(1)
								time.Sleep(time.Second) // refused at once: try again a little later
							}
						}
					}()
				}
			}
			return func() (int64, string) {
				wg.Wait()
				return dials.Load(), fmt.Sprintf("%d of the connections closed within 100ms of opening", refusedFast.Load())
			}
		},
	}
}

// loop runs call in workers goroutines until ctx ends, counting calls and
// the codes they ended with.
func loop(ctx context.Context, workers int, call func(ctx context.Context, i int64) error) func() (int64, string) {
	var calls atomic.Int64
	var mu sync.Mutex
	codes := map[string]int{}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := calls.Add(1)
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := call(cctx, i)
				cancel()
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				codes[codeOf(err)]++
				mu.Unlock()
			}
		}()
	}
	return func() (int64, string) {
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		var parts []string
		for c, k := range codes {
			parts = append(parts, fmt.Sprintf("%s %d", c, k))
		}
		slices.Sort(parts)
		return calls.Load(), strings.Join(parts, ", ")
	}
}

// rawRequest is a request the attacker encoded once: it goes out as its
// bytes, whatever the method expects, so that the attacker spends no CPU
// building it again.
type rawRequest []byte

type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(rawRequest); ok {
		return mem.BufferSlice{mem.SliceBuffer(r)}, nil
	}
	return encoding.GetCodecV2("proto").Marshal(v)
}

// Unmarshal skips the answer: the attacker does not read it.
func (rawCodec) Unmarshal(mem.BufferSlice, any) error { return nil }

// invokeRaw sends prepared bytes to a Gateway method.
func invokeRaw(ctx context.Context, cc *grpc.ClientConn, method string, req rawRequest) error {
	var skip struct{}
	return cc.Invoke(ctx, method, req, &skip, grpc.ForceCodecV2(rawCodec{}))
}

func mustMarshal(m proto.Message) rawRequest {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}

const labelFloodDescription = "member p2 sends document queries, each with one link the brokers issued to it (to p3's record, found by discovery) and 63 it forged in the links' format under the live key (256 requests, 16,128 forged links, encoded once), 4 at a time; the sealed-link check refuses each query at its first forged link"

// labelFloodAttack was, before the brokers sealed links, 63 links naming
// members that do not exist, to grow the broker's metric labels. A member
// can no longer name a member at all, only present links; what it can
// still do is forge them, in the format and under the key id of a real one,
// so that the broker opens the real link and tries the forged one before it
// refuses the query.
func labelFloodAttack(cc *grpc.ClientConn, env AttackEnv) attack {
	var reqs []rawRequest
	return attack{
		description: labelFloodDescription,
		prepare: func(ctx context.Context) error {
			d, err := env.patient()
			if err != nil {
				return err
			}
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			issued, err := patientLinks(cctx, qhinv1.NewGatewayClient(cc), d, "p3")
			if err != nil {
				return fmt.Errorf("label-flood: find a link to p3's record: %w", err)
			}
			raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(issued[0], audit.LinkPrefix))
			if err != nil || len(raw) < 4 {
				return errors.New("label-flood: the issued link is not in the format the attack forges")
			}
			keyID := raw[:4]
			reqs = make([]rawRequest, 256)
			for i := range reqs {
				links := []*qhinv1.PatientLink{{Link: issued[0]}}
				for range 63 {
					links = append(links, &qhinv1.PatientLink{Link: forgedLink(keyID, len(raw))})
				}
				reqs[i] = mustMarshal(&qhinv1.QueryDocumentsRequest{PurposeOfUse: purposeOfUse, Requester: requester(), Links: links})
			}
			return nil
		},
		start: func(ctx context.Context) func() (int64, string) {
			return loop(ctx, 4, func(ctx context.Context, i int64) error {
				return invokeRaw(ctx, cc, qhinv1.Gateway_QueryDocuments_FullMethodName, reqs[i%int64(len(reqs))])
			})
		},
	}
}

// forgedLink is size bytes in the format of a link: the key id, then
// random bytes where the nonce and the sealed claims go.
func forgedLink(keyID []byte, size int) string {
	b := make([]byte, size)
	copy(b, keyID)
	crand.Read(b[len(keyID):])
	return audit.LinkPrefix + base64.RawURLEncoding.EncodeToString(b)
}

const manyLinksDescription = "member p2 sends document queries naming 150,000 records of p3 by member and record id, no link the brokers issued (2.7 MB, encoded once), 2 at a time; refused before any link is opened"

func manyLinksAttack(cc *grpc.ClientConn, _ AttackEnv) attack {
	links := make([]*qhinv1.PatientLink, 150_000)
	for i := range links {
		links[i] = &qhinv1.PatientLink{ParticipantId: "p3", PatientId: fmt.Sprintf("p3-%06d", i)}
	}
	req := mustMarshal(&qhinv1.QueryDocumentsRequest{PurposeOfUse: purposeOfUse, Requester: requester(), Links: links})
	return attack{
		description: manyLinksDescription,
		start: func(ctx context.Context) func() (int64, string) {
			return loop(ctx, 2, func(ctx context.Context, _ int64) error {
				return invokeRaw(ctx, cc, qhinv1.Gateway_QueryDocuments_FullMethodName, req)
			})
		},
	}
}

const neverReadDescription = "member p2 finds the link to a 12 MiB document of p3 (discovery, then a document query), then opens 300 retrievals with it and never reads past the first message"

func neverReadAttack(cc *grpc.ClientConn, env AttackEnv) attack {
	gw := qhinv1.NewGatewayClient(cc)
	var link string
	return attack{
		description: neverReadDescription,
		prepare: func(ctx context.Context) error {
			d, err := env.patient()
			if err != nil {
				return err
			}
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if link, err = documentLink(cctx, gw, d, "p3", env.Document); err != nil {
				return fmt.Errorf("never-read: find the document's link: %w", err)
			}
			return nil
		},
		start: func(ctx context.Context) func() (int64, string) {
			// Each stream's first message says whether the broker took
			// it: the header of an accepted retrieval, or the refusal.
			// Nothing after the header is read.
			var (
				opened int64
				mu     sync.Mutex
				codes  = map[string]int{}
				wg     sync.WaitGroup
			)
			for range 300 {
				s, err := gw.RetrieveDocument(ctx, &qhinv1.RetrieveDocumentRequest{PurposeOfUse: purposeOfUse, Requester: requester(),
					Link: &qhinv1.DocumentLink{Link: link}})
				if err != nil {
					continue
				}
				opened++
				wg.Add(1)
				go func() {
					defer wg.Done()
					outcome := "accepted"
					if _, err := s.Recv(); err != nil {
						outcome = codeOf(err)
					}
					mu.Lock()
					codes[outcome]++
					mu.Unlock()
				}()
			}
			return func() (int64, string) {
				wg.Wait()
				parts := []string{fmt.Sprintf("%d accepted", codes["accepted"])}
				for c, k := range codes {
					if c != "accepted" {
						parts = append(parts, fmt.Sprintf("%s %d", c, k))
					}
				}
				slices.Sort(parts[1:])
				return opened, "streams opened, none read past the header: " + strings.Join(parts, ", ")
			}
		},
	}
}

const oversizedDescription = "member p2 sends discovery queries with a 3.9 MB address line or 100,000 identifiers (encoded once), 2 at a time"

func oversizedAttack(cc *grpc.ClientConn, _ AttackEnv) attack {
	demo := func() *qhinv1.Demographics {
		return &qhinv1.Demographics{Given: "Ann", Family: "Lee", BirthDate: "1970-01-01", Gender: "female"}
	}
	long := demo()
	long.Address = &qhinv1.Address{Lines: []string{strings.Repeat("Quillfeather Lane ", 3_900_000/18)}}
	many := demo()
	for i := range 100_000 {
		many.Identifiers = append(many.Identifiers, &qhinv1.Identifier{System: "urn:x", Value: fmt.Sprint(i)})
	}
	reqs := [2]rawRequest{
		mustMarshal(&qhinv1.DiscoverPatientsRequest{PurposeOfUse: purposeOfUse, Requester: requester(), Demographics: long}),
		mustMarshal(&qhinv1.DiscoverPatientsRequest{PurposeOfUse: purposeOfUse, Requester: requester(), Demographics: many}),
	}
	return attack{
		description: oversizedDescription,
		start: func(ctx context.Context) func() (int64, string) {
			return loop(ctx, 2, func(ctx context.Context, i int64) error {
				return invokeRaw(ctx, cc, qhinv1.Gateway_DiscoverPatients_FullMethodName, reqs[i%2])
			})
		},
	}
}
