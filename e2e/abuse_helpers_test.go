package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/openqhin/openqhin/pki"
	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// legitimate keeps making a well-formed discovery query for maria, one after
// another, until stopped: the member that is not attacking, whose queries
// must keep succeeding whatever the attack does.
type legitimate struct {
	stop chan struct{}
	done chan struct{}
	ok   atomic.Int64

	mu   sync.Mutex
	errs []error
}

// queryMeanwhile starts legitimate queries from gw; each must find maria at
// the member holding her (holder) within a generous deadline.
func queryMeanwhile(t *testing.T, gw qhinv1.GatewayClient, holder string) *legitimate {
	t.Helper()
	l := &legitimate{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			if err := findMaria(gw, holder); err != nil {
				l.mu.Lock()
				l.errs = append(l.errs, err)
				l.mu.Unlock()
			} else {
				l.ok.Add(1)
			}
		}
	}()
	t.Cleanup(func() { l.finish() })
	return l
}

// findMaria makes one legitimate query and checks its answer.
func findMaria(gw qhinv1.GatewayClient, holder string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := gw.DiscoverPatients(ctx, &qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: maria})
	if err != nil {
		return fmt.Errorf("legitimate query: %w", err)
	}
	for _, p := range resp.Persons {
		for _, l := range p.Links {
			if l.ParticipantId == holder {
				return nil
			}
		}
	}
	return fmt.Errorf("legitimate query: maria not found at %s among %d persons (members: %v)", holder, len(resp.Persons), resp.Responders)
}

func (l *legitimate) finish() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

// check stops the queries and fails the test unless every one of them
// succeeded and at least one was made.
func (l *legitimate) check(t *testing.T) {
	t.Helper()
	l.finish()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) > 0 {
		t.Errorf("%d of %d legitimate queries failed during the attack; first: %v", len(l.errs), int64(len(l.errs))+l.ok.Load(), l.errs[0])
	}
	if l.ok.Load() == 0 && len(l.errs) == 0 {
		t.Error("no legitimate query was made during the attack")
	}
}

// startFakeResponder serves srv as the Responder of member id, with a real
// SVID of the network's CA, and registers the member in the directory.
func startFakeResponder(t *testing.T, n *Network, id string, srv qhinv1.ResponderServer) {
	t.Helper()
	src, err := n.Issue(pki.RoleParticipant, id)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := pki.ServerConfig{Source: src, Policy: pki.DefaultPolicy, Roles: []pki.Role{pki.RoleBroker}}.ServerOptions()
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(append(opts, grpc.MaxSendMsgSize(64<<20))...)
	qhinv1.RegisterResponderServer(s, srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(s.Stop)
	registerMember(t, n, id, l.Addr().String())
}

// fieldSlot is one string field that a request can carry, found by walking
// the message's descriptor: path is its wire path as an error should name
// it ("links[0].patient_id"), set puts a value into it.
type fieldSlot struct {
	path string
	set  func(m proto.Message, v string)
}

// listSlot is one repeated field; fill makes it hold n items, each a copy of
// a well-formed one where the base request has one.
type listSlot struct {
	path string
	fill func(m proto.Message, n int)
}

// requestSlots lists every string and repeated field reachable from a
// request message, however deeply nested. Timestamps hold no strings.
func requestSlots(base proto.Message) ([]fieldSlot, []listSlot) {
	var strs []fieldSlot
	var lists []listSlot
	var walk func(md protoreflect.MessageDescriptor, prefix string, get func(protoreflect.Message) protoreflect.Message)
	walk = func(md protoreflect.MessageDescriptor, prefix string, get func(protoreflect.Message) protoreflect.Message) {
		fields := md.Fields()
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			path := prefix + string(fd.Name())
			switch {
			case fd.IsList():
				lists = append(lists, listSlot{path: path, fill: func(m proto.Message, n int) {
					l := get(m.ProtoReflect()).Mutable(fd).List()
					var proto0 protoreflect.Value
					if l.Len() > 0 {
						proto0 = l.Get(0)
					}
					for l.Len() < n {
						switch {
						case fd.Kind() == protoreflect.StringKind:
							l.Append(protoreflect.ValueOfString(fmt.Sprintf("x%d", l.Len())))
						case proto0.IsValid():
							l.Append(protoreflect.ValueOfMessage(proto.Clone(proto0.Message().Interface()).ProtoReflect()))
						default:
							l.Append(l.NewElement())
						}
					}
				}})
				elem := path + "[0]"
				switch fd.Kind() {
				case protoreflect.StringKind:
					strs = append(strs, fieldSlot{path: elem, set: func(m proto.Message, v string) {
						l := get(m.ProtoReflect()).Mutable(fd).List()
						if l.Len() == 0 {
							l.Append(protoreflect.ValueOfString(v))
						} else {
							l.Set(0, protoreflect.ValueOfString(v))
						}
					}})
				case protoreflect.MessageKind:
					walk(fd.Message(), elem+".", func(root protoreflect.Message) protoreflect.Message {
						l := get(root).Mutable(fd).List()
						if l.Len() == 0 {
							l.Append(l.NewElement())
						}
						return l.Get(0).Message()
					})
				}
			case fd.Kind() == protoreflect.StringKind:
				strs = append(strs, fieldSlot{path: path, set: func(m proto.Message, v string) {
					get(m.ProtoReflect()).Set(fd, protoreflect.ValueOfString(v))
				}})
			case fd.Kind() == protoreflect.MessageKind:
				if strings.HasPrefix(string(fd.Message().FullName()), "google.protobuf.") {
					continue
				}
				walk(fd.Message(), path+".", func(root protoreflect.Message) protoreflect.Message {
					return get(root).Mutable(fd).Message()
				})
			}
		}
	}
	walk(base.ProtoReflect().Descriptor(), "", func(m protoreflect.Message) protoreflect.Message { return m })
	return strs, lists
}

// gatewayRequests are well-formed requests of every Gateway method, with
// every optional list holding one item, so that each field's check is
// reached.
func gatewayRequests() []proto.Message {
	d := proto.Clone(maria).(*qhinv1.Demographics)
	d.Identifiers = []*qhinv1.Identifier{{System: "urn:oid:2.16.840.1.113883.4.1", Value: "MRN-1", Type: "MR"}}
	return []proto.Message{
		&qhinv1.DiscoverPatientsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(), Demographics: d},
		&qhinv1.QueryDocumentsRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
			Links: []*qhinv1.PatientLink{{ParticipantId: "p2", PatientId: "p2-000042"}}, TypeCodes: []string{"34133-9"}},
		&qhinv1.RetrieveDocumentRequest{PurposeOfUse: "T-TRTMNT", Requester: requester(),
			Link: &qhinv1.DocumentLink{ParticipantId: "p2", DocumentId: "p2-doc-1"}},
	}
}

// callGateway sends any Gateway request and returns the call's error (for a
// retrieval, the first failure of the stream, read to its end).
func callGateway(ctx context.Context, gw qhinv1.GatewayClient, req proto.Message) error {
	switch r := req.(type) {
	case *qhinv1.DiscoverPatientsRequest:
		_, err := gw.DiscoverPatients(ctx, r)
		return err
	case *qhinv1.QueryDocumentsRequest:
		_, err := gw.QueryDocuments(ctx, r)
		return err
	case *qhinv1.RetrieveDocumentRequest:
		s, err := gw.RetrieveDocument(ctx, r)
		if err != nil {
			return err
		}
		for {
			if _, err := s.Recv(); errors.Is(err, io.EOF) {
				return nil
			} else if err != nil {
				return err
			}
		}
	}
	panic(fmt.Sprintf("not a Gateway request: %T", req))
}

func methodOf(req proto.Message) string {
	return string(req.ProtoReflect().Descriptor().Name())
}

// pollFor calls cond until it returns nil or timeout passes, and returns its
// last error.
func pollFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
