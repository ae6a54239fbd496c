package tempowriter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/watershed-dev/watershed/platform/config"
	"github.com/watershed-dev/watershed/platform/httpwriter"
	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// httpSender exports with OTLP HTTP (protobuf body, gzip).
type httpSender struct {
	url     string
	auth    string
	gzip    bool
	timeout time.Duration
	client  *http.Client
	bufs    sync.Pool
}

func newHTTPSender(t config.TempoConfig) (*httpSender, error) {
	tr := httpwriter.NewTransport()
	if strings.HasPrefix(t.Host, "https://") {
		tc, err := tlsConfig(t.TLS)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = tc
	}
	return &httpSender{
		url: t.URL(), auth: authorization(t), gzip: t.Compression == "gzip", timeout: t.Queue.RemoteTimeout,
		client: &http.Client{Transport: tr},
		bufs:   sync.Pool{New: func() any { return new(bytes.Buffer) }},
	}, nil
}

// Send POSTs the joined request.
func (s *httpSender) Send(ctx context.Context, tenant string, req *remotewrite.Joiner) (httpwriter.Result, error) {
	body := req.Uncompressed()
	buf := s.bufs.Get().(*bytes.Buffer)
	defer s.bufs.Put(buf)
	if s.gzip {
		buf.Reset()
		zw, _ := gzip.NewWriterLevel(buf, gzip.BestSpeed)
		_, _ = zw.Write(body)
		_ = zw.Close()
		body = buf.Bytes()
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return httpwriter.Result{}, &httpwriter.SendError{Class: httpwriter.Permanent, Reason: "bad_request", Err: err}
	}
	hr.Header.Set("Content-Type", "application/x-protobuf")
	hr.Header.Set("User-Agent", UserAgent)
	if s.gzip {
		hr.Header.Set("Content-Encoding", "gzip")
	}
	if tenant != "" {
		hr.Header.Set("X-Scope-OrgID", tenant)
	}
	if s.auth != "" {
		hr.Header.Set("Authorization", s.auth)
	}
	resp, err := s.client.Do(hr)
	if err != nil {
		reason := "connection"
		if errors.Is(err, context.DeadlineExceeded) {
			reason = "timeout"
		}
		return httpwriter.Result{}, &httpwriter.SendError{Class: httpwriter.Retryable, Reason: reason, Err: err}
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_, _ = io.Copy(io.Discard, resp.Body)
	if err := httpwriter.Classify(resp.StatusCode, resp.Header.Get("Retry-After"), strings.TrimSpace(string(answer)), nil); err != nil {
		return httpwriter.Result{}, err
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-protobuf") {
		return httpwriter.Result{Bytes: len(body)}, nil
	}
	return partialSuccess(answer, len(body))
}
