package broker

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the proto codec answerCodec wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// boundedList is a member's answer decoded only in part: the first max
// items of its one repeated field, and a count of every item it sent. The
// items past max are skipped on the wire and never allocated, so a member
// that floods the broker costs it a scan of the bytes (a few milliseconds
// for a 1 MiB answer), not an object per item.
type boundedList[E any, PE interface {
	*E
	proto.Message
}] struct {
	field protowire.Number
	max   int
	items []PE
	sent  int
}

// newBoundedList decodes field of msg, which must be a repeated message
// field, keeping at most max items.
func newBoundedList[E any, PE interface {
	*E
	proto.Message
}](msg proto.Message, field protoreflect.Name, max int) *boundedList[E, PE] {
	fd := msg.ProtoReflect().Descriptor().Fields().ByName(field)
	if fd == nil || !fd.IsList() || fd.Message() == nil || fd.Message().FullName() != PE(new(E)).ProtoReflect().Descriptor().FullName() {
		panic(fmt.Sprintf("%s has no repeated field %s of the list's item type", msg.ProtoReflect().Descriptor().FullName(), field))
	}
	return &boundedList[E, PE]{field: fd.Number(), max: max}
}

func (l *boundedList[E, PE]) decodeWire(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num == l.field && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			l.sent++
			if len(l.items) < l.max {
				item := PE(new(E))
				if err := proto.Unmarshal(v, item); err != nil {
					return err
				}
				l.items = append(l.items, item)
			}
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// wireDecoder is an answer that decodes itself from the wire.
type wireDecoder interface{ decodeWire([]byte) error }

// answerCodec is gRPC's proto codec, except that it lets a wireDecoder
// decode itself. Its name is proto's, so the wire format and content type
// are unchanged.
type answerCodec struct{}

var protoCodec = encoding.GetCodecV2("proto")

func (answerCodec) Name() string { return "proto" }

func (answerCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (answerCodec) Unmarshal(data mem.BufferSlice, v any) error {
	d, ok := v.(wireDecoder)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return d.decodeWire(buf.ReadOnlyData())
}

// candidatesAnswer and documentsAnswer are the bounded forms of the
// Responder's discovery and document answers.
type (
	candidatesAnswer = boundedList[qhinv1.Candidate, *qhinv1.Candidate]
	documentsAnswer  = boundedList[qhinv1.DocumentMetadata, *qhinv1.DocumentMetadata]
)

func newCandidatesAnswer(max int) *candidatesAnswer {
	return newBoundedList[qhinv1.Candidate](&qhinv1.ResponderDiscoverPatientsResponse{}, "candidates", max)
}

func newDocumentsAnswer(max int) *documentsAnswer {
	return newBoundedList[qhinv1.DocumentMetadata](&qhinv1.ResponderQueryDocumentsResponse{}, "documents", max)
}
