package participant

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/openqhin/openqhin/broker/telemetry"
	"github.com/openqhin/openqhin/participant/match"
	"github.com/openqhin/openqhin/participant/store"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// Bounds of the member's record-locator work.
const (
	// publishBatch is the most tokens of one PublishTokens or
	// WithdrawTokens call (the brokers take up to 10,000).
	publishBatch = 10_000
	// reconcileBatch is the patients whose tokens are computed per store
	// transaction at start.
	reconcileBatch = 2048
	// maxAliases bounds the tokens queries confirmed that one patient keeps.
	maxAliases = 16
	// publishTimeout bounds one call to the brokers.
	publishTimeout = 30 * time.Second
	maxBackoff     = 2 * time.Second
)

// locator keeps a member's record-locator tokens in step with its records
// and tells the brokers. Writes of patients record their tokens in the
// store (and queue what changed) before they return; at start every
// patient's tokens are recomputed, which picks up records imported while
// the member was down and re-publishes everything after a key rotation; a
// publisher drains the queue to the brokers in batches, publications
// before withdrawals, and takes each batch off the queue once the cluster
// has applied it.
type locator struct {
	key    *match.LinkageKey
	store  *store.Store
	client qhinv1.LocatorClient
	log    *slog.Logger

	// mu orders a recomputation of stored patients' tokens against the
	// token writes of patient writes, so that the last tokens written for
	// a patient are those of its newest demographics.
	mu sync.Mutex

	kick      chan struct{}
	confirms  chan confirmation
	stop      chan struct{}
	wg        sync.WaitGroup
	reconcile chan struct{} // closed once the start's recomputation is done
	sent      *prometheus.CounterVec
}

// confirmation is a responder's match, whose query tokens the patient may
// keep as aliases.
type confirmation struct {
	patientID string
	query     match.Record
	pair      match.Pair
}

func newLocator(key *match.LinkageKey, st *store.Store, conn grpc.ClientConnInterface, reg *prometheus.Registry, log *slog.Logger) *locator {
	l := &locator{
		key: key, store: st, client: qhinv1.NewLocatorClient(conn), log: log.With("component", "locator"),
		kick: make(chan struct{}, 1), confirms: make(chan confirmation, 256), stop: make(chan struct{}),
		reconcile: make(chan struct{}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "locator", Name: "tokens_sent_total",
			Help: "Record-locator tokens the brokers acknowledged, by direction (publish, withdraw).",
		}, []string{"direction"}),
	}
	queued := func(dir string, pick func(p, w int) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: "locator", Name: "tokens_queued",
			Help: "Record-locator tokens waiting to be sent to the brokers, by direction.", ConstLabels: prometheus.Labels{"direction": dir},
		}, func() float64 {
			p, w, err := st.PendingTokenCount()
			if err != nil {
				return 0
			}
			return float64(pick(p, w))
		})
	}
	reg.MustRegister(l.sent,
		queued("publish", func(p, _ int) int { return p }),
		queued("withdraw", func(_, w int) int { return w }))
	return l
}

// start recomputes every stored patient's tokens, then publishes until
// close.
func (l *locator) start() {
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		l.recomputeAll()
		close(l.reconcile)
		l.publish()
	}()
	go func() {
		defer l.wg.Done()
		l.confirmLoop()
	}()
}

func (l *locator) close() {
	close(l.stop)
	l.wg.Wait()
}

// signal wakes the publisher.
func (l *locator) signal() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// update records the tokens of patients just written.
func (l *locator) update(ctx context.Context, ps []store.Patient) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.store.SetTokens(ctx, l.tokensOf(ps))
	if err == nil {
		l.signal()
	}
	return err
}

func (l *locator) tokensOf(ps []store.Patient) []store.PatientTokens {
	out := make([]store.PatientTokens, len(ps))
	for i, p := range ps {
		out[i] = store.PatientTokens{PatientID: p.ID, KeyID: l.key.ID(), Tokens: l.key.Tokens(match.Normalize(p.Demographics))}
	}
	return out
}

// recomputeAll recomputes every stored patient's tokens under the key, and
// forgets the tokens of patients that are gone.
func (l *locator) recomputeAll() {
	start := time.Now()
	total, _, _ := l.store.Counts()
	done, changed := 0, 0
	last := time.Now()
	for after := ""; ; {
		if l.stopped() {
			return
		}
		l.mu.Lock()
		ps, err := l.store.PatientsAfter(after, reconcileBatch)
		var n int
		if err == nil && len(ps) > 0 {
			n, err = l.store.SetTokens(context.Background(), l.tokensOf(ps))
		}
		l.mu.Unlock()
		if err != nil {
			l.log.Error("recompute record-locator tokens; the brokers may route queries for some patients elsewhere until the next start", "error", err)
			return
		}
		if len(ps) == 0 {
			break
		}
		done, changed = done+len(ps), changed+n
		after = ps[len(ps)-1].ID
		if n > 0 {
			l.signal()
		}
		if time.Since(last) > 5*time.Second {
			l.log.Info("computing record-locator tokens", "patients", done, "of", total, "changed", changed)
			last = time.Now()
		}
	}
	for after := ""; ; {
		ids, next, err := l.store.TokenPatientsWithout(after, reconcileBatch)
		if err == nil && len(ids) > 0 {
			err = l.store.DropTokens(context.Background(), ids)
			l.signal()
		}
		if err != nil {
			l.log.Error("drop the tokens of removed patients", "error", err)
			return
		}
		if next == "" {
			break
		}
		after = next
	}
	l.log.Info("record-locator tokens computed", "key_id", l.key.ID(), "patients", done, "changed", changed,
		"ms", time.Since(start).Milliseconds())
}

func (l *locator) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// publish drains the queue to the brokers until close.
func (l *locator) publish() {
	backoff := 100 * time.Millisecond
	var lastCode string
	for {
		c, ok, err := l.store.PendingTokens(publishBatch)
		if err != nil {
			l.log.Error("read queued tokens", "error", err)
		}
		if err != nil || !ok {
			select {
			case <-l.stop:
				return
			case <-l.kick:
			case <-time.After(time.Minute):
			}
			continue
		}
		reqID := newRequestID()
		for {
			err := l.send(c, reqID)
			if err == nil {
				if err := l.store.AckTokens(c); err != nil {
					l.log.Error("acknowledge sent tokens", "error", err)
				}
				l.sent.WithLabelValues(direction(c)).Add(float64(len(c.Tokens)))
				if lastCode != "" {
					l.log.Info("brokers take record-locator tokens again")
				}
				backoff, lastCode = 100*time.Millisecond, ""
				break
			}
			// The brokers' messages name fields and rules, never values.
			code := status.Code(err).String()
			if code != lastCode {
				l.log.Warn("brokers refused record-locator tokens; retrying", "direction", direction(c), "tokens", len(c.Tokens),
					"key_id", c.KeyID, "code", code, "error", status.Convert(err).Message())
				lastCode = code
			}
			select {
			case <-l.stop:
				return
			case <-l.kick:
			case <-time.After(backoff + mrand.N(backoff/2)):
			}
			backoff = min(2*backoff, maxBackoff)
		}
	}
}

func direction(c store.TokenChange) string {
	if c.Publish {
		return "publish"
	}
	return "withdraw"
}

func (l *locator) send(c store.TokenChange, reqID string) error {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	go func() {
		select {
		case <-l.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	tokens := make([][]byte, len(c.Tokens))
	for i := range c.Tokens {
		tokens[i] = c.Tokens[i][:]
	}
	var err error
	if c.Publish {
		_, err = l.client.PublishTokens(ctx, &qhinv1.PublishTokensRequest{KeyId: c.KeyID, Tokens: tokens, RequestId: reqID})
	} else {
		_, err = l.client.WithdrawTokens(ctx, &qhinv1.WithdrawTokensRequest{KeyId: c.KeyID, Tokens: tokens, RequestId: reqID})
	}
	return err
}

func newRequestID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return "rls-" + hex.EncodeToString(b[:])
}

// confirmed queues a responder's match: the patient keeps the tokens of
// the query's demographics that its matcher found agreeing, so that the
// next query written the same way finds the member through the locator.
// It never blocks an answer: when the queue is full the confirmation is
// dropped.
func (l *locator) confirmed(patientID string, q match.Record, pair match.Pair) {
	select {
	case l.confirms <- confirmation{patientID, q, pair}:
	default:
	}
}

func (l *locator) confirmLoop() {
	for {
		select {
		case <-l.stop:
			return
		case c := <-l.confirms:
			tokens := l.key.ConfirmedTokens(c.query, c.pair)
			if len(tokens) == 0 {
				continue
			}
			l.mu.Lock()
			n, err := l.store.AddAliasTokens(context.Background(), c.patientID, l.key.ID(), tokens, maxAliases)
			l.mu.Unlock()
			if err != nil {
				l.log.Error("record confirmed tokens", "patient", c.patientID, "error", err)
				continue
			}
			if n > 0 {
				l.signal()
			}
		}
	}
}

// LocatorStatus is what a member's record locator holds and has still to
// tell the brokers.
type LocatorStatus struct {
	KeyID string
	// Tokens counts the distinct tokens of the member's patients under the
	// key.
	Tokens int
	// Publish and Withdraw count the tokens queued for the brokers.
	Publish, Withdraw int
	// Computed reports whether the start's recomputation has finished.
	Computed bool
}

// Locator reports the member's record-locator state; ok is false when the
// member runs without a linkage key.
func (s *Server) Locator() (st LocatorStatus, ok bool, err error) {
	l := s.locator
	if l == nil {
		return st, false, nil
	}
	st.KeyID = l.key.ID()
	select {
	case <-l.reconcile:
		st.Computed = true
	default:
	}
	counts, err := s.store.TokenCounts()
	if err != nil {
		return st, true, err
	}
	st.Tokens = counts[st.KeyID]
	st.Publish, st.Withdraw, err = s.store.PendingTokenCount()
	return st, true, err
}

// KickLocator makes the member's publisher try its queue again now rather
// than after its backoff (once it has been registered, say).
func (s *Server) KickLocator() {
	if s.locator != nil {
		s.locator.signal()
	}
}
