package grpcgzip

import (
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"google.golang.org/grpc/encoding"
	// gRPC's gzip registers itself in its init; importing it here makes
	// that init run before this package's, which then replaces it.
	grpcgzip "google.golang.org/grpc/encoding/gzip"
)

// Name is the compressor's name in gRPC, the same as gRPC's gzip.
const Name = grpcgzip.Name

func init() {
	encoding.RegisterCompressor(&compressor{})
}

type compressor struct {
	writers sync.Pool // *gzip.Writer
	readers sync.Pool // *gzip.Reader
}

func (c *compressor) Name() string { return Name }

func (c *compressor) Compress(w io.Writer) (io.WriteCloser, error) {
	z, ok := c.writers.Get().(*gzip.Writer)
	if !ok {
		var err error
		if z, err = gzip.NewWriterLevel(w, gzip.BestSpeed); err != nil {
			return nil, err
		}
	} else {
		z.Reset(w)
	}
	return &writer{Writer: z, pool: &c.writers}, nil
}

// writer goes back to its pool when closed.
type writer struct {
	*gzip.Writer
	pool *sync.Pool
}

func (w *writer) Close() error {
	defer w.pool.Put(w.Writer)
	return w.Writer.Close()
}

func (c *compressor) Decompress(r io.Reader) (io.Reader, error) {
	z, ok := c.readers.Get().(*gzip.Reader)
	if !ok {
		return newReader(r, &c.readers)
	}
	if err := z.Reset(r); err != nil {
		c.readers.Put(z)
		return nil, err
	}
	return &reader{z: z, pool: &c.readers}, nil
}

func newReader(r io.Reader, pool *sync.Pool) (io.Reader, error) {
	z, err := gzip.NewReader(r)
	if err != nil {
		return nil, err
	}
	return &reader{z: z, pool: pool}, nil
}

// reader goes back to its pool at the end of its stream; it then answers
// io.EOF without touching the pooled reader, which another may hold.
type reader struct {
	z    *gzip.Reader
	pool *sync.Pool
}

func (r *reader) Read(p []byte) (int, error) {
	if r.z == nil {
		return 0, io.EOF
	}
	n, err := r.z.Read(p)
	if err == io.EOF {
		r.pool.Put(r.z)
		r.z = nil
	}
	return n, err
}
