package cluster

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// bufConn is a net.Conn that reads from a buffer and discards writes.
type bufConn struct {
	net.Conn
	r *bytes.Reader
}

func (c bufConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c bufConn) Write(p []byte) (int, error) { return len(p), nil }
func (c bufConn) Close() error                { return nil }
func (c bufConn) RemoteAddr() net.Addr        { return &net.TCPAddr{} }

func encodeRPC(t testing.TB, rpcType uint8, req any) []byte {
	var b bytes.Buffer
	b.WriteByte(rpcType)
	if err := codec.NewEncoder(&b, &codec.MsgpackHandle{}).Encode(req); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// FuzzClaimConn feeds the Raft receiving side arbitrary bytes from a peer
// whose certificate names broker b2. It never panics, and every request it
// passes on to Raft decodes, as Raft decodes it, to one whose server id is
// b2.
func FuzzClaimConn(f *testing.F) {
	h := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("b2"), Addr: []byte("127.0.0.1:2")}
	f.Add(encodeRPC(f, rpcAppendEntries, &raft.AppendEntriesRequest{RPCHeader: h, Term: 3, Entries: []*raft.Log{{Index: 1, Data: []byte("x")}}}))
	f.Add(encodeRPC(f, rpcRequestVote, &raft.RequestVoteRequest{RPCHeader: h, Term: 3}))
	f.Add(encodeRPC(f, rpcAppendEntries, &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ID: []byte("b3")}}))
	f.Add(append(encodeRPC(f, rpcInstallSnapshot, &raft.InstallSnapshotRequest{RPCHeader: h, Size: 4}), "data"...))
	f.Add([]byte{9, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		s := &tlsStreamLayer{log: slog.New(slog.DiscardHandler)}
		cc := newClaimConn(bufConn{r: bytes.NewReader(b)}, "b2", s.checkClaim, slog.New(slog.DiscardHandler))
		cc.cutoff = time.Time{}
		passed, _ := io.ReadAll(io.LimitReader(cc, 1<<20))
		// Raft reads what passed exactly as it reads a connection.
		r := bytes.NewReader(passed)
		dec := codec.NewDecoder(r, &codec.MsgpackHandle{})
		for {
			t0, err := r.ReadByte()
			if err != nil {
				return
			}
			var req struct {
				ID   []byte
				Size int64
			}
			if err := dec.Decode(&req); err != nil {
				t.Fatalf("passed a request Raft cannot decode: %v", err)
			}
			if string(req.ID) != "b2" {
				t.Fatalf("passed a request (type %d) claiming server %q", t0, req.ID)
			}
			if t0 == rpcInstallSnapshot {
				if _, err := io.CopyN(io.Discard, r, req.Size); err != nil {
					return
				}
			}
		}
	})
}
