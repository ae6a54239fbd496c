package receiver

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zlib"
)

// Limits bound one request.
type Limits struct {
	MaxRequestSize      int64
	MaxDecompressedSize int64
}

// readBody reads a request body within the limits, decompressing gzip and
// deflate. A body over MaxRequestSize is ErrTooLarge; one that inflates
// past MaxDecompressedSize (a gzip bomb) is ErrInvalid, found after reading
// at most that many bytes.
func readBody(r *http.Request, l Limits) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, l.MaxRequestSize+1))
	if err != nil {
		return nil, invalidf("reading the body: %v", err)
	}
	if int64(len(raw)) > l.MaxRequestSize {
		return nil, fmt.Errorf("%w: body is over receivers.limits.maxRequestSize (%d bytes)", ErrTooLarge, l.MaxRequestSize)
	}
	var zr io.Reader
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		return raw, nil
	case "gzip", "x-gzip":
		gz, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, invalidf("Content-Encoding gzip: %v", err)
		}
		zr = gz
	case "deflate":
		z, err := zlib.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, invalidf("Content-Encoding deflate: %v", err)
		}
		zr = z
	default:
		return nil, invalidf("Content-Encoding %q is not supported (gzip, deflate or none)", enc)
	}
	out, err := io.ReadAll(io.LimitReader(zr, l.MaxDecompressedSize+1))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, invalidf("decompressing the body: %v", err)
	}
	if int64(len(out)) > l.MaxDecompressedSize {
		return nil, invalidf("body decompresses to more than receivers.limits.maxDecompressedSize (%d bytes)", l.MaxDecompressedSize)
	}
	return out, nil
}

// mediaType is the Content-Type without parameters, lower case.
func mediaType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.ToLower(strings.TrimSpace(ct))
}
