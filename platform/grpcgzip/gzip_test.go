package grpcgzip

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc/encoding"
)

func TestReplacesGRPCGzip(t *testing.T) {
	if _, ok := encoding.GetCompressor(Name).(*compressor); !ok {
		t.Fatalf("gRPC's %q compressor is %T, not this package's", Name, encoding.GetCompressor(Name))
	}
}

// Messages compressed and decompressed one after another, as a
// connection's do, through pooled writers and readers.
func TestRoundTrips(t *testing.T) {
	c := encoding.GetCompressor(Name)
	for i, msg := range []string{"", "span", strings.Repeat("trace of many spans ", 5000), "after a large one"} {
		var buf bytes.Buffer
		w, err := c.Compress(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, msg); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		r, err := c.Decompress(&buf)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || string(got) != msg {
			t.Fatalf("message %d: got %d bytes (%v), want %d", i, len(got), err, len(msg))
		}
		// Reads after the end do not reach the reader back in the pool.
		if n, err := r.Read(make([]byte, 8)); n != 0 || err != io.EOF {
			t.Errorf("message %d: read after the end gave %d, %v", i, n, err)
		}
	}
	if _, err := c.Decompress(strings.NewReader("not gzip")); err == nil {
		t.Error("decompressing what is not gzip: no error")
	}
}
