package bench

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/openqhin/openqhin/broker"
	"github.com/openqhin/openqhin/broker/cluster"
	"github.com/openqhin/openqhin/broker/fsm"
	"github.com/openqhin/openqhin/e2e"
	"github.com/openqhin/openqhin/participant"
	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/participant/synth"
	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// LocatorOptions configure [Locator]. Zero fields take the defaults.
type LocatorOptions struct {
	// Brokers in each network (default 3).
	Brokers int `json:"brokers"`
	// Patients whose tokens are published (default 1,000,000), each with
	// TokensPerPatient tokens (default 4), in calls of Batch tokens
	// (default 10,000, the most a call takes) from Writers members
	// publishing at once (default 4).
	Patients         int `json:"patients"`
	TokensPerPatient int `json:"tokens_per_patient"`
	Batch            int `json:"batch"`
	Writers          int `json:"writers"`
	// Members of the discovery network (default 200), holding Persons
	// synthetic persons (default 10,000), every one of them at two or
	// three members.
	Members int `json:"members"`
	Persons int `json:"persons"`
	// Queries per path (default 400), made in Rounds (default 4) in which
	// the paths take turns, by Workers closed-loop workers (default 4).
	Queries int `json:"queries"`
	Rounds  int `json:"rounds"`
	Workers int `json:"workers"`
	// SkipPublish and SkipDiscovery leave a part out.
	SkipPublish   bool          `json:"skip_publish,omitempty"`
	SkipDiscovery bool          `json:"skip_discovery,omitempty"`
	Dir           string        `json:"-"`
	FastRaft      bool          `json:"fast_raft,omitempty"`
	Timeout       time.Duration `json:"-"`
}

func (o *LocatorOptions) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Brokers, 3)
	def(&o.Patients, 1_000_000)
	def(&o.TokensPerPatient, 4)
	def(&o.Batch, fsm.MaxLocatorTokens)
	def(&o.Writers, 4)
	def(&o.Members, 200)
	def(&o.Persons, 10_000)
	def(&o.Queries, 400)
	def(&o.Rounds, 4)
	def(&o.Workers, 4)
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
}

// LocatorResult is what [Locator] measured.
type LocatorResult struct {
	Scenario  string            `json:"scenario"`
	Machine   Machine           `json:"machine"`
	Options   LocatorOptions    `json:"options"`
	Started   time.Time         `json:"started"`
	Elapsed   Duration          `json:"elapsed_ms"`
	Publish   *LocatorPublish   `json:"publish,omitempty"`
	Snapshot  *LocatorSnapshot  `json:"snapshot,omitempty"`
	Discovery *LocatorDiscovery `json:"discovery,omitempty"`
	Notes     []string          `json:"notes"`
}

// LocatorPublish is the publication of every patient's tokens through the
// cluster.
type LocatorPublish struct {
	Tokens int `json:"tokens"`
	Calls  int `json:"calls"`
	// Seconds from the first call to the last acknowledgement, and the
	// tokens acknowledged per second over it; FirstTenth and LastTenth
	// are the rates while the first and the last tenth of the tokens were
	// acknowledged (the table grows as it goes).
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"tokens_per_s"`
	FirstTenth float64 `json:"first_tenth_tokens_per_s"`
	LastTenth  float64 `json:"last_tenth_tokens_per_s"`
	Latency    Latency `json:"call_latency"`
	// Entries is the locator table's entries on the leader afterwards.
	Entries int `json:"entries"`
	// Bytes per token: the pages the locator table occupies, the bytes
	// in use in them, and the whole state file.
	AllocPerToken float64 `json:"alloc_bytes_per_token"`
	InUsePerToken float64 `json:"in_use_bytes_per_token"`
	FilePerToken  float64 `json:"file_bytes_per_token"`
	FileBytes     int64   `json:"file_bytes"`
	Depth         int     `json:"depth"`
}

// LocatorSnapshot is the snapshot of the state holding every token, and its
// install on a new broker.
type LocatorSnapshot struct {
	Take      Duration `json:"take_ms"`
	Bytes     int64    `json:"bytes"`
	FileBytes int64    `json:"file_bytes"`
	// Install is from AddBroker to the new broker's locator digest equal
	// to the leader's.
	Install Duration `json:"install_ms"`
	// Per million tokens.
	TakePerMillion    Duration `json:"take_per_million_ms"`
	InstallPerMillion Duration `json:"install_per_million_ms"`
}

// LocatorDiscovery compares discovery with the initiator's tokens
// (targeted) and without (every member is asked) in one network.
type LocatorDiscovery struct {
	Members       int             `json:"members"`
	Persons       int             `json:"persons"`
	Registrations int             `json:"registrations"`
	Tokens        int             `json:"tokens"`
	Paths         []DiscoveryPath `json:"paths"`
	// Ratios targeted/broadcast.
	AskedRatio float64 `json:"asked_ratio"`
	P50Ratio   float64 `json:"p50_ratio"`
	P99Ratio   float64 `json:"p99_ratio"`
}

// DiscoveryPath is one way of asking.
type DiscoveryPath struct {
	Path    string `json:"path"`
	Queries int    `json:"queries"`
	Errors  int    `json:"errors"`
	// Members asked per query (not SKIPPED).
	AskedMean float64 `json:"asked_mean"`
	AskedP50  int     `json:"asked_p50"`
	AskedP99  int     `json:"asked_p99"`
	Latency   Latency `json:"latency"`
	// Recall is the share of the queried persons' registrations the
	// answers linked.
	Recall     float64 `json:"recall"`
	FirstError string  `json:"first_error,omitempty"`
}

// Locator measures the record locator: every patient's tokens published
// through the cluster's public API (as the members' publishers call it),
// the size of the locator in the state machine, the snapshot of that state
// and its install on a new broker; then discovery in a network of many
// members, each person at two or three of them, with tokens (targeted)
// against without (broadcast), the two paths taking turns in one run.
func Locator(ctx context.Context, o LocatorOptions, progress Progress) (*LocatorResult, error) {
	o.defaults()
	res := &LocatorResult{Scenario: "locator", Machine: CurrentMachine(), Options: o, Started: time.Now()}
	if !o.SkipPublish {
		if err := locatorPublish(ctx, o, res, progress); err != nil {
			return nil, err
		}
	}
	if !o.SkipDiscovery {
		d, err := locatorDiscovery(ctx, o, progress)
		if err != nil {
			return nil, err
		}
		res.Discovery = d
	}
	res.Elapsed = Duration(time.Since(res.Started))
	res.Notes = []string{
		fmt.Sprintf("publish: %d members publish at once through the public API (PublishTokens, mutual TLS, any broker, forwarded once to the leader), %d tokens a call, each call one Raft entry acknowledged once applied on the leader",
			o.Writers, o.Batch),
		"publish tokens are HMAC-SHA256 outputs (truncated to 16 bytes) of patient numbers under a fresh key: spread over the key space as real tokens are",
		"bytes per token: the locator table's pages (allocated, and in use) over its entries; the state file includes every table and free pages",
		"snapshot: Node.Snapshot on the leader (Raft's snapshot of the bbolt file), then a new broker added and timed until its locator table's digest equals the leader's",
		fmt.Sprintf("discovery: %d members, %d persons each registered at two or three of them (synthetic, with the variations of real registrations); every member published its tokens before the queries", o.Members, o.Persons),
		"targeted: the query carries the tokens of the person's demographics (the brokers ask the members the locator lists, falling back to every member without a hit); broadcast: the same query without tokens (every member is asked)",
		"each path queries its own persons (a confirmed match records tokens: asking the same person on both paths would favour the second); recall counts the registrations of each queried person the answer linked",
		"every member connects from 127.0.0.1, so the brokers' per-source connection cap (--max-connections-per-source, 64 by default, meant for one member per address) is raised to twice the members plus 64",
		fmt.Sprintf("closed loop: %d workers, %d rounds, the paths alternating A B B A; every broker and member runs in this process", o.Workers, o.Rounds),
	}
	return res, nil
}

// benchToken is token k of patient i under secret.
func benchToken(secret []byte, i, k int) []byte {
	h := hmac.New(sha256.New, secret)
	var b [16]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	binary.BigEndian.PutUint64(b[8:], uint64(k))
	h.Write(b[:])
	return h.Sum(nil)[:fsm.TokenSize]
}

func locatorPublish(ctx context.Context, o LocatorOptions, res *LocatorResult, progress Progress) error {
	progress.report("starting network", 0, 1)
	n, err := startNetwork(ctx, o.Dir, e2e.Options{Brokers: o.Brokers, Participants: o.Writers, FastRaft: o.FastRaft, TrailingLogs: 64})
	if err != nil {
		return err
	}
	defer n.stop()
	key, err := match.GenerateLinkageKey()
	if err != nil {
		return err
	}
	if err := registerKey(ctx, n, key); err != nil {
		return err
	}
	secret := []byte("bench tokens of " + key.ID())

	total := o.Patients * o.TokensPerPatient
	perCall := max(1, o.Batch/o.TokensPerPatient)
	type ack struct {
		at     time.Time
		tokens int
	}
	var (
		mu        sync.Mutex
		acks      []ack
		latencies []time.Duration
		firstErr  error
		done      int
	)
	next := make(chan int)
	go func() {
		defer close(next)
		for p := 0; p < o.Patients; p += perCall {
			select {
			case next <- p:
			case <-ctx.Done():
				return
			}
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range o.Writers {
		conn, err := n.Dial(n.ParticipantSource(w))
		if err != nil {
			return err
		}
		defer conn.Close()
		loc := qhinv1.NewLocatorClient(conn)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range next {
				end := min(p+perCall, o.Patients)
				tokens := make([][]byte, 0, (end-p)*o.TokensPerPatient)
				for i := p; i < end; i++ {
					for k := range o.TokensPerPatient {
						tokens = append(tokens, benchToken(secret, i, k))
					}
				}
				cctx, cancel := context.WithTimeout(ctx, o.Timeout)
				t0 := time.Now()
				_, err := loc.PublishTokens(cctx, &qhinv1.PublishTokensRequest{KeyId: key.ID(), Tokens: tokens, RequestId: fmt.Sprintf("bench-%d", p)})
				cancel()
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
				} else {
					acks = append(acks, ack{time.Now(), len(tokens)})
					latencies = append(latencies, time.Since(t0))
					done += len(tokens)
				}
				d := done
				mu.Unlock()
				progress.report("publishing tokens", d, total)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("publish: %w", firstErr)
	}
	elapsed := time.Since(start)
	p := &LocatorPublish{Tokens: done, Calls: len(acks), Seconds: elapsed.Seconds(), PerSecond: float64(done) / elapsed.Seconds(),
		Latency: summarize(latencies)}
	slices.SortFunc(acks, func(a, b ack) int { return a.at.Compare(b.at) })
	rate := func(from, to int) float64 { // over the acks whose cumulative tokens fall in [from, to)
		var t0, t1 time.Time
		sum, counted := 0, 0
		for _, a := range acks {
			if sum >= from && sum < to {
				if t0.IsZero() {
					t0 = a.at
				}
				t1 = a.at
				counted += a.tokens
			}
			sum += a.tokens
		}
		if !t1.After(t0) {
			return 0
		}
		return float64(counted) / t1.Sub(t0).Seconds()
	}
	p.FirstTenth, p.LastTenth = rate(0, done/10), rate(done-done/10, done)
	res.Publish = p

	progress.report("snapshot", 0, 1)
	leader, li, err := leaderOf(ctx, n)
	if err != nil {
		return err
	}
	size, err := leader.FSM().LocatorSize()
	if err != nil {
		return err
	}
	p.Entries, p.FileBytes, p.Depth = size.Entries, size.FileBytes, size.Depth
	p.AllocPerToken = float64(size.Allocated) / float64(size.Entries)
	p.InUsePerToken = float64(size.InUse) / float64(size.Entries)
	p.FilePerToken = float64(size.FileBytes) / float64(size.Entries)

	s := &LocatorSnapshot{}
	t0 := time.Now()
	if err := leader.Snapshot(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	s.Take = Duration(time.Since(t0))
	cw := &countingWriter{}
	if _, err := leader.FSM().WriteTo(cw); err != nil {
		return err
	}
	s.Bytes = cw.n
	s.FileBytes = latestSnapshotFile(filepath.Join(n.Brokers[li].Dir, "data", "snapshots"))
	sums, err := leader.FSM().Checksums()
	if err != nil {
		return err
	}
	progress.report("installing the snapshot on a new broker", 0, 1)
	t0 = time.Now()
	nb, err := n.AddBroker(false)
	if err != nil {
		return fmt.Errorf("add broker: %w", err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		if got, err := n.Brokers[nb].Server.Node().FSM().Checksums(); err == nil && got["locator"] == sums["locator"] {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("the new broker did not install the locator within 10 minutes")
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Install = Duration(time.Since(t0))
	millions := float64(size.Entries) / 1e6
	s.TakePerMillion = Duration(float64(s.Take) / millions)
	s.InstallPerMillion = Duration(float64(s.Install) / millions)
	res.Snapshot = s
	progress.report("installing the snapshot on a new broker", 1, 1)
	return nil
}

func registerKey(ctx context.Context, n *network, key *match.LinkageKey) error {
	op, err := n.Dial(n.Operator())
	if err != nil {
		return err
	}
	defer op.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = qhinv1.NewLocatorClient(op).SetLinkageKey(cctx, &qhinv1.SetLinkageKeyRequest{
		KeyId: key.ID(), State: qhinv1.LinkageKeyState_LINKAGE_KEY_STATE_ACTIVE, RequestId: "bench-key"})
	if err != nil {
		return fmt.Errorf("register the linkage key: %w", err)
	}
	// The key is acknowledged once the leader applied it; a follower that
	// has not applied it yet refuses tokens under it. Publishing starts
	// when every broker holds it.
	for _, b := range n.Brokers {
		for {
			_, err := b.Server.Node().FSM().LinkageKey(key.ID())
			if err == nil {
				break
			}
			if !errors.Is(err, fsm.ErrNotFound) {
				return fmt.Errorf("broker %s: linkage key: %w", b.ID, err)
			}
			select {
			case <-cctx.Done():
				return fmt.Errorf("broker %s does not hold the linkage key: %w", b.ID, cctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}

func leaderOf(ctx context.Context, n *network) (*cluster.Node, int, error) {
	for {
		if i := n.Leader(); i >= 0 {
			return n.Brokers[i].Server.Node(), i, nil
		}
		select {
		case <-ctx.Done():
			return nil, -1, fmt.Errorf("no leader: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// person is one queried person: the demographics to ask with and where
// the person is registered.
type person struct {
	d     *qhinv1.Demographics
	holds map[string]string // participant → patient id
}

func locatorDiscovery(ctx context.Context, o LocatorOptions, progress Progress) (*LocatorDiscovery, error) {
	key, err := match.GenerateLinkageKey()
	if err != nil {
		return nil, err
	}
	progress.report("starting the discovery network", 0, 1)
	// Every member reaches the brokers from 127.0.0.1 here: the brokers'
	// per-source connection cap, meant for one member per address, would
	// close the connections of all but the first few dozen members.
	conns := max(2*o.Members+64, pki.DefaultMaxConnectionsPerSource)
	limits := broker.Limits{Server: pki.ServerLimits{MaxConnectionsPerSource: conns, MaxConnections: max(conns, pki.DefaultMaxConnections)}}
	n, err := startNetwork(ctx, o.Dir, e2e.Options{Brokers: o.Brokers, Participants: o.Members, FastRaft: o.FastRaft, LinkageKey: key, Limits: limits})
	if err != nil {
		return nil, err
	}
	defer n.stop()
	var ids []string
	sinks := map[string]participant.BatchSink{}
	for _, p := range n.Participants {
		ids = append(ids, p.ID)
		sinks[p.ID] = p.Server
	}
	opts := synth.Options{Seed: 1, Persons: o.Persons, Participants: ids, SharedFraction: 1, MaxDocuments: -1}
	if err := participant.ImportSynthetic(ctx, opts, sinks, func(done, total int) { progress.report("seeding persons", done, total) }); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	var persons []*person
	regs := 0
	err = synth.Generate(opts, func(r synth.Registration) error {
		regs++
		if len(persons) == 0 || persons[len(persons)-1].id() != r.PersonID {
			d := r.Demographics
			d.Identifiers = nil
			persons = append(persons, &person{d: d, holds: map[string]string{"": r.PersonID}})
		}
		persons[len(persons)-1].holds[r.ParticipantID] = r.PatientID
		return nil
	})
	if err != nil {
		return nil, err
	}
	progress.report("members publishing their tokens", 0, 1)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	err = n.WaitLocator(wctx)
	cancel()
	if err != nil {
		return nil, err
	}
	tokens := 0
	for _, p := range n.Participants {
		st, _, _ := p.Server.Locator()
		tokens += st.Tokens
	}
	res := &LocatorDiscovery{Members: o.Members, Persons: o.Persons, Registrations: regs, Tokens: tokens}

	// The first participant initiates; persons it holds are left out, so
	// that every queried person is elsewhere only.
	initiator := n.Participants[0].ID
	var pool []*person
	for _, p := range persons {
		if p.holds[initiator] == "" {
			pool = append(pool, p)
		}
	}
	if len(pool) < 2*o.Queries {
		return nil, fmt.Errorf("%d persons to query, want %d: raise --persons", len(pool), 2*o.Queries)
	}
	conn, err := n.Dial(n.ParticipantSource(0))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	gw := conn.Gateway()
	paths := []string{"targeted", "broadcast"}
	// Warm up every connection, with persons no path queries.
	for i, p := range pool[2*o.Queries : min(len(pool), 2*o.Queries+8)] {
		if _, _, _, err := discoverPerson(ctx, gw, key, p, i%2 == 0, o.Timeout); err != nil {
			return nil, fmt.Errorf("warm up: %w", err)
		}
	}
	type outcome struct {
		latency      time.Duration
		asked        int
		found, holds int
		err          error
	}
	results := make([][]outcome, 2)
	perRound := o.Queries / o.Rounds
	order := abba(o.Rounds)
	next := [2]int{}
	for step, pi := range order {
		progress.report("discovery queries", step, len(order))
		count := perRound
		if step/2 == o.Rounds-1 {
			count = o.Queries - perRound*(o.Rounds-1)
		}
		// Path pi queries pool[pi*Queries + k].
		batch := make(chan *person)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range o.Workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for p := range batch {
					t0 := time.Now()
					asked, found, holds, err := discoverPerson(ctx, gw, key, p, pi == 0, o.Timeout)
					mu.Lock()
					results[pi] = append(results[pi], outcome{time.Since(t0), asked, found, holds, err})
					mu.Unlock()
				}
			}()
		}
		for range count {
			batch <- pool[pi*o.Queries+next[pi]]
			next[pi]++
		}
		close(batch)
		wg.Wait()
	}
	progress.report("discovery queries", len(order), len(order))
	for pi, name := range paths {
		dp := DiscoveryPath{Path: name}
		var lat []time.Duration
		var asked []int
		found, holds := 0, 0
		for _, r := range results[pi] {
			dp.Queries++
			if r.err != nil {
				dp.Errors++
				if dp.FirstError == "" {
					dp.FirstError = r.err.Error()
				}
				continue
			}
			lat = append(lat, r.latency)
			asked = append(asked, r.asked)
			found += r.found
			holds += r.holds
		}
		dp.Latency = summarize(lat)
		if len(asked) > 0 {
			slices.Sort(asked)
			sum := 0
			for _, a := range asked {
				sum += a
			}
			dp.AskedMean = float64(sum) / float64(len(asked))
			dp.AskedP50 = asked[(len(asked)-1)/2]
			dp.AskedP99 = asked[min(len(asked)-1, (len(asked)*99+99)/100-1)]
		}
		dp.Recall = ratio(float64(found), float64(holds))
		res.Paths = append(res.Paths, dp)
	}
	t, b := res.Paths[0], res.Paths[1]
	res.AskedRatio = ratio(t.AskedMean, b.AskedMean)
	res.P50Ratio = ratio(float64(t.Latency.P50), float64(b.Latency.P50))
	res.P99Ratio = ratio(float64(t.Latency.P99), float64(b.Latency.P99))
	return res, nil
}

func (p *person) id() string { return p.holds[""] }

// discoverPerson asks for p through the brokers, with its tokens or
// without, and returns how many members were asked and how many of p's
// registrations the answer linked.
func discoverPerson(ctx context.Context, gw qhinv1.GatewayClient, key *match.LinkageKey, p *person, tokens bool, timeout time.Duration) (asked, found, holds int, err error) {
	req := &qhinv1.DiscoverPatientsRequest{PurposeOfUse: purposeOfUse, Requester: requester(), Demographics: p.d}
	if tokens {
		if t := key.QueryTokens(p.d); t != nil {
			req.LocatorTokens = []*qhinv1.LocatorTokens{t}
		}
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := gw.DiscoverPatients(cctx, req)
	if err != nil {
		return 0, 0, 0, err
	}
	for _, s := range resp.Responders {
		switch s.Status {
		case qhinv1.ResponderState_RESPONDER_STATE_SKIPPED:
		case qhinv1.ResponderState_RESPONDER_STATE_OK, qhinv1.ResponderState_RESPONDER_STATE_NO_MATCH:
			asked++
		default:
			return 0, 0, 0, fmt.Errorf("member %s: %v %s", s.ParticipantId, s.Status, s.Detail)
		}
	}
	linked := map[string]bool{}
	for _, per := range resp.Persons {
		for _, l := range per.Links {
			linked[l.ParticipantId+"/"+l.PatientId] = true
		}
	}
	for member, patient := range p.holds {
		if member == "" {
			continue
		}
		holds++
		if linked[member+"/"+patient] {
			found++
		}
	}
	return asked, found, holds, nil
}
