package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/openqhin/openqhin/e2e"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// RetrieveOptions configure [Retrieve]. Zero fields take the defaults.
type RetrieveOptions struct {
	// Size of the document in bytes (default 256 MiB).
	Size int64 `json:"size"`
	// Rounds: retrievals per path, alternating (default 3).
	Rounds int `json:"rounds"`
	// Timeout bounds each retrieval (default 10m).
	Timeout  time.Duration `json:"timeout_ns"`
	Dir      string        `json:"-"`
	FastRaft bool          `json:"fast_raft,omitempty"`
}

func (o *RetrieveOptions) defaults() {
	if o.Size <= 0 {
		o.Size = 256 * MB
	}
	if o.Rounds <= 0 {
		o.Rounds = 3
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
}

// RetrieveResult is what [Retrieve] measured.
type RetrieveResult struct {
	Scenario string          `json:"scenario"`
	Machine  Machine         `json:"machine"`
	Options  RetrieveOptions `json:"options"`
	Started  time.Time       `json:"started"`
	Elapsed  Duration        `json:"elapsed_ms"`
	// Store is how long putting the document into the participant took,
	// and SHA256 its digest as generated.
	Store  Duration `json:"store_ms"`
	SHA256 string   `json:"sha256"`
	// BaselineHeap is the process's HeapInuse after a collection, before
	// any retrieval.
	BaselineHeap uint64       `json:"baseline_heap_bytes"`
	Broker       RetrievePath `json:"broker"`
	Direct       RetrievePath `json:"direct"`
	// Ratio is the broker path's median MB/s over the direct path's.
	Ratio float64  `json:"ratio"`
	Notes []string `json:"notes"`
}

// RetrievePath is one path's retrievals.
type RetrievePath struct {
	// MBps is the median throughput in MiB/s; RoundMBps every round's.
	MBps      float64    `json:"mib_per_s"`
	RoundMBps []float64  `json:"round_mib_per_s"`
	Times     []Duration `json:"times_ms"`
	// Verified: every retrieval delivered the whole document with the
	// SHA-256 it was stored with.
	Verified bool `json:"verified"`
	// Peaks sampled every 10ms during this path's retrievals,
	// process-wide: HeapInuse, VmRSS, RssAnon (VmRSS without file-backed
	// pages: the holder's bbolt memory map counts in VmRSS as it streams
	// the document out), and VmHWM (reset before each retrieval where
	// Linux allows it; PeakHWMReset says whether it did).
	PeakHeapInuse uint64 `json:"peak_heap_inuse_bytes"`
	PeakRSS       uint64 `json:"peak_rss_bytes"`
	PeakRSSAnon   uint64 `json:"peak_rss_anon_bytes"`
	PeakHWM       uint64 `json:"peak_vmhwm_bytes"`
	PeakHWMReset  bool   `json:"peak_vmhwm_reset"`
	// CPUPerGiB is process CPU seconds (user+system, the whole network's)
	// per GiB retrieved, and Cores the CPU seconds per wall second.
	CPUPerGiB float64 `json:"cpu_seconds_per_gib"`
	Cores     float64 `json:"cores"`
}

// Retrieve measures streaming one large document out of a participant
// through a broker against reading it straight from the participant's
// Responder. The document is generated as it is stored and hashed as it
// arrives; no copy of it is ever held in memory by the benchmark.
func Retrieve(ctx context.Context, o RetrieveOptions, progress Progress) (*RetrieveResult, error) {
	o.defaults()
	res := &RetrieveResult{Scenario: "retrieve", Machine: CurrentMachine(), Options: o, Started: time.Now()}
	progress.report("starting network", 0, 1)
	n, err := startNetwork(ctx, o.Dir, e2e.Options{Brokers: 1, Participants: 2, FastRaft: o.FastRaft})
	if err != nil {
		return nil, err
	}
	defer n.stop()

	const patientID, docID = "bench-patient", "bench-doc"
	holder := n.Participants[0]
	patient := &qhinv1.Demographics{Given: "Bench", Family: "Mark", BirthDate: "1970-01-01", Gender: "other"}
	if err := holder.Server.PutPatient(ctx, patientID, patient); err != nil {
		return nil, err
	}
	start := time.Now()
	h := sha256.New()
	content := &countingReader{
		r:        io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{'q', 'h', 'i', 'n', 'b', 'e', 'n', 'c', 'h'}), o.Size), h),
		progress: func(done int64) { progress.report("storing document (MiB)", int(done/MB), int(o.Size/MB)) },
	}
	stored, err := holder.Server.PutDocument(ctx, &qhinv1.DocumentMetadata{
		Id: docID, Patient: &qhinv1.PatientLink{PatientId: patientID}, TypeCode: "18748-4", Title: "Imaging study",
		Created: timestamppb.New(time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)), ContentType: "application/dicom",
	}, content)
	if err != nil {
		return nil, fmt.Errorf("store document: %w", err)
	}
	res.Store = Duration(time.Since(start))
	res.SHA256 = hex.EncodeToString(h.Sum(nil))
	if stored.Size != o.Size || stored.Sha256 != res.SHA256 {
		return nil, fmt.Errorf("stored document: %d bytes, sha256 %s; generated %d bytes, sha256 %s", stored.Size, stored.Sha256, o.Size, res.SHA256)
	}

	conn, err := n.Dial(n.ParticipantSource(1))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	gw := conn.Gateway()
	direct, err := dialResponders(n, []int{0})
	if err != nil {
		return nil, err
	}
	defer direct.close()
	rc := direct.clients[holder.ID]
	// The broker path retrieves with the document link the brokers issued
	// to the initiator, found as a member finds it (discovery, then a
	// document query) before each broker retrieval and outside its timing,
	// so that no round presents a link near its expiry.
	var link string
	open := [2]func(ctx context.Context) (chunkStream, error){
		func(ctx context.Context) (chunkStream, error) {
			return gw.RetrieveDocument(ctx, &qhinv1.RetrieveDocumentRequest{
				PurposeOfUse: purposeOfUse, Requester: requester(), Link: &qhinv1.DocumentLink{Link: link},
			})
		},
		func(ctx context.Context) (chunkStream, error) {
			return rc.RetrieveDocument(ctx, &qhinv1.ResponderRetrieveDocumentRequest{
				Context: queryContext(n.Participants[1].ID), DocumentId: docID,
			})
		},
	}

	res.BaselineHeap = heapInuse()
	paths := []*RetrievePath{&res.Broker, &res.Direct}
	for _, p := range paths {
		p.Verified = true
	}
	var (
		cpuSum, wallSum [2]time.Duration
		bytesSum        [2]int64
	)
	order := abba(o.Rounds)
	for step, v := range order {
		p := paths[v]
		if v == 0 {
			progress.report(fmt.Sprintf("finding the document's link %d/%d", step+1, len(order)), 0, 1)
			lctx, cancel := context.WithTimeout(ctx, time.Minute)
			link, err = documentLink(lctx, gw, patient, holder.ID, docID)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("retrieve (broker): find the document's link: %w", err)
			}
		}
		runtime.GC()
		p.PeakHWMReset = resetPeakRSS()
		peak := sampleMemory(10 * time.Millisecond)
		cctx, cancel := context.WithTimeout(ctx, o.Timeout)
		t0, cpu0 := time.Now(), processCPU()
		got, err := receiveDocument(cctx, open[v], func(done int64) {
			progress.report(fmt.Sprintf("retrieving %d/%d (%s, MiB)", step+1, len(order), pathName(v)), int(done/MB), int(o.Size/MB))
		})
		elapsed, cpu := time.Since(t0), processCPU()-cpu0
		cancel()
		mem := peak.Stop()
		hwm := procMemory().VmHWM
		if err != nil {
			return nil, fmt.Errorf("retrieve (%s): %w", pathName(v), err)
		}
		p.PeakHeapInuse = max(p.PeakHeapInuse, mem.HeapInuse)
		p.PeakRSS = max(p.PeakRSS, mem.RSS)
		p.PeakRSSAnon = max(p.PeakRSSAnon, mem.RSSAnon)
		p.PeakHWM = max(p.PeakHWM, hwm)
		p.Times = append(p.Times, Duration(elapsed))
		cpuSum[v] += cpu
		wallSum[v] += elapsed
		bytesSum[v] += got.size
		p.RoundMBps = append(p.RoundMBps, float64(got.size)/MB/elapsed.Seconds())
		if got.size != o.Size || got.sha256 != res.SHA256 || got.header.GetSha256() != res.SHA256 {
			p.Verified = false
		}
	}
	for v, p := range paths {
		p.MBps = median(p.RoundMBps)
		p.CPUPerGiB = ratio(cpuSum[v].Seconds(), float64(bytesSum[v])/(1<<30))
		p.Cores = ratio(cpuSum[v].Seconds(), wallSum[v].Seconds())
	}
	res.Ratio = ratio(res.Broker.MBps, res.Direct.MBps)
	res.Elapsed = Duration(time.Since(res.Started))
	res.Notes = []string{
		fmt.Sprintf("%d retrievals per path, alternating A B B A; throughput is the median", o.Rounds),
		"memory figures are process-wide: the holding participant, the broker, the client and the benchmark share this process",
		"VmRSS and VmHWM count the pages of the holder's bbolt file that the stream maps in (about the document's size); RssAnon leaves them out",
		"the SHA-256 of every retrieval is computed over the bytes received and compared with the digest of the generated content",
		"the broker path presents the document link the brokers issued, found by a discovery and a document query before each of its retrievals and not timed; the direct path names the document to the member's Responder as a broker does",
	}
	return res, nil
}

// chunkStream is a document stream, from a Gateway or a Responder.
type chunkStream interface {
	Recv() (*qhinv1.RetrieveDocumentResponse, error)
}

type receivedDoc struct {
	header *qhinv1.DocumentMetadata
	size   int64
	sha256 string
}

// receiveDocument reads a document stream to its end, hashing the content
// and keeping none of it.
func receiveDocument(ctx context.Context, open func(context.Context) (chunkStream, error), progress func(int64)) (receivedDoc, error) {
	var out receivedDoc
	s, err := open(ctx)
	if err != nil {
		return out, err
	}
	h := sha256.New()
	var reported int64
	for {
		msg, err := s.Recv()
		if errors.Is(err, io.EOF) {
			out.sha256 = hex.EncodeToString(h.Sum(nil))
			progress(out.size)
			return out, nil
		}
		if err != nil {
			return out, err
		}
		switch part := msg.Part.(type) {
		case *qhinv1.RetrieveDocumentResponse_Header:
			if out.header != nil {
				return out, errors.New("a second header")
			}
			out.header = part.Header
		case *qhinv1.RetrieveDocumentResponse_Chunk:
			if out.header == nil {
				return out, errors.New("content before the header")
			}
			h.Write(part.Chunk)
			out.size += int64(len(part.Chunk))
			if out.size-reported >= 4*MB {
				reported = out.size
				progress(out.size)
			}
		}
	}
}

// countingReader reports how much has been read through it every few MiB.
type countingReader struct {
	r        io.Reader
	n, last  int64
	progress func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n-c.last >= 4*MB || err != nil {
		c.last = c.n
		c.progress(c.n)
	}
	return n, err
}
