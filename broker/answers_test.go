package broker

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

func TestBoundedList_DecodesTheFirstItemsAndCountsTheRest(t *testing.T) {
	resp := &qhinv1.ResponderDiscoverPatientsResponse{}
	for i := range 1000 {
		resp.Candidates = append(resp.Candidates, &qhinv1.Candidate{PatientId: fmt.Sprintf("c%d", i), Score: 0.9,
			Demographics: &qhinv1.Demographics{Given: "Ann", Family: "Lee"}})
	}
	wire, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	// A field the broker does not know, after the candidates, is skipped.
	wire = protowire.AppendTag(wire, 99, protowire.BytesType)
	wire = protowire.AppendBytes(wire, []byte("from a newer member"))

	for _, max := range []int{0, 10, 1000, 5000} {
		ans := newCandidatesAnswer(max)
		if err := (answerCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, ans); err != nil {
			t.Fatalf("max %d: %v", max, err)
		}
		if ans.sent != 1000 || len(ans.items) != min(max, 1000) {
			t.Fatalf("max %d: kept %d of %d sent, want %d of 1000", max, len(ans.items), ans.sent, min(max, 1000))
		}
		for i, c := range ans.items {
			if !proto.Equal(c, resp.Candidates[i]) {
				t.Fatalf("max %d: item %d is %v, want %v", max, i, c, resp.Candidates[i])
			}
		}
	}

	docs := &qhinv1.ResponderQueryDocumentsResponse{Documents: []*qhinv1.DocumentMetadata{{Id: "d1"}, {Id: "d2"}, {Id: "d3"}}}
	wire, _ = proto.Marshal(docs)
	d := newDocumentsAnswer(2)
	if err := (answerCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, d); err != nil || d.sent != 3 || len(d.items) != 2 || d.items[1].Id != "d2" {
		t.Fatalf("documents: %v, kept %v of %d", err, d.items, d.sent)
	}

	// Truncated or malformed answers are errors, not partial answers.
	for name, bad := range map[string][]byte{
		"truncated": wire[:len(wire)-1],
		"bad tag":   {0xff},
		"bad item":  protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte{0x0a, 0x05}),
	} {
		if err := (answerCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(bad)}, newDocumentsAnswer(10)); err == nil {
			t.Errorf("%s answer decoded", name)
		}
	}
	// Anything else goes through the proto codec.
	var plain qhinv1.ResponderQueryDocumentsResponse
	if err := (answerCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &plain); err != nil || len(plain.Documents) != 3 {
		t.Fatalf("plain: %v, %d documents", err, len(plain.Documents))
	}
}

func BenchmarkBoundedList_Flood(b *testing.B) {
	resp := &qhinv1.ResponderDiscoverPatientsResponse{}
	for i := range 50_000 {
		resp.Candidates = append(resp.Candidates, &qhinv1.Candidate{PatientId: fmt.Sprintf("h%06d", i), Score: 1,
			Demographics: &qhinv1.Demographics{Given: "Ann", Family: "Lee", BirthDate: "1970-01-01", Gender: "female"}})
	}
	wire, _ := proto.Marshal(resp)
	b.Run("bounded to 100", func(b *testing.B) {
		for b.Loop() {
			if err := newCandidatesAnswer(100).decodeWire(wire); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("whole message", func(b *testing.B) {
		for b.Loop() {
			var r qhinv1.ResponderDiscoverPatientsResponse
			if err := proto.Unmarshal(wire, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
