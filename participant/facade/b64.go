package facade

import (
	"bufio"
	"encoding/base64"
	"io"
)

// encodedLen is the length of n bytes in padded standard base64.
func encodedLen(n int64) int64 { return (n + 2) / 3 * 4 }

// base64Writer encodes what it is given into w, buffered, so that a large
// document is wrapped in a FHIR Binary as it streams.
type base64Writer struct {
	buf *bufio.Writer
	enc io.WriteCloser
}

func newBase64Writer(w io.Writer) *base64Writer {
	buf := bufio.NewWriterSize(w, 64<<10)
	return &base64Writer{buf: buf, enc: base64.NewEncoder(base64.StdEncoding, buf)}
}

func (b *base64Writer) Write(p []byte) (int, error) { return b.enc.Write(p) }

// Close writes the last padded group and flushes.
func (b *base64Writer) Close() error {
	if err := b.enc.Close(); err != nil {
		return err
	}
	return b.buf.Flush()
}
