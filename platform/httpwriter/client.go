package httpwriter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/watershed-dev/watershed/platform/remotewrite"
)

// ErrorClass says what a writer does with a failed request.
type ErrorClass int

const (
	// Retryable failures (5xx, connection errors, timeouts) are sent again
	// after a backoff.
	Retryable ErrorClass = iota
	// Throttled failures (429) are sent again after the backend's delay.
	Throttled
	// Permanent failures (other 4xx) will fail again: counted and acked.
	Permanent
)

func (c ErrorClass) String() string {
	switch c {
	case Retryable:
		return "retryable"
	case Throttled:
		return "throttled"
	default:
		return "permanent"
	}
}

// SendError is a failed remote-write request.
type SendError struct {
	Class ErrorClass
	// Status is the HTTP status, 0 when no answer came.
	Status int
	// RetryAfter is the backend's requested delay, 0 when it gave none.
	RetryAfter time.Duration
	// Reason is a bounded label value.
	Reason string
	Err    error
}

func (e *SendError) Error() string {
	return fmt.Sprintf("remote write %s (%s): %v", e.Class, e.Reason, e.Err)
}

func (e *SendError) Unwrap() error { return e.Err }

// client POSTs requests of one protocol to one endpoint.
type client struct {
	cfg  Config
	http *http.Client
}

// NewHTTPSender is the default transport: it POSTs the snappy-compressed
// request to cfg.URL with cfg.Protocol's headers and cfg's credentials.
func NewHTTPSender(cfg Config) Sender { return newClient(cfg) }

func newClient(cfg Config) *client {
	return &client{cfg: cfg, http: &http.Client{Transport: NewTransport()}}
}

// maxIdleConnsPerHost keeps one connection per partition a replica may
// send at once (config nats.partitions is at most 1024).
const maxIdleConnsPerHost = 1024

// NewTransport is the HTTP transport of a writer. Go's default keeps two
// idle connections per host, so a writer sending many partitions at once,
// as it does while catching up, would close all others after each request
// and dial again for the next.
func NewTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = maxIdleConnsPerHost
	tr.MaxIdleConns = 0 // no limit over all hosts
	return tr
}

// Send POSTs the snappy-compressed request.
func (c *client) Send(ctx context.Context, tenant string, req *remotewrite.Joiner) (Result, error) {
	body := req.Compressed()
	return Result{Bytes: len(body)}, c.send(ctx, tenant, body)
}

// send POSTs one compressed request body. It returns nil on 2xx and a
// *SendError otherwise.
func (c *client) send(ctx context.Context, tenant string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Queue.RemoteTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return &SendError{Class: Permanent, Reason: "bad_request", Err: err}
	}
	for k, v := range c.cfg.Protocol.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	if tenant != "" {
		req.Header.Set("X-Scope-OrgID", tenant)
	}
	switch {
	case c.cfg.BearerToken != "":
		req.Header.Set("Authorization", "Bearer "+c.cfg.BearerToken)
	case c.cfg.BasicAuth.Username != "":
		req.SetBasicAuth(c.cfg.BasicAuth.Username, c.cfg.BasicAuth.Password.String())
	}
	resp, err := c.http.Do(req)
	if err != nil {
		reason := "connection"
		if errors.Is(err, context.DeadlineExceeded) {
			reason = "timeout"
		}
		return &SendError{Class: Retryable, Reason: reason, Err: err}
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	_, _ = io.Copy(io.Discard, resp.Body)
	return Classify(resp.StatusCode, resp.Header.Get("Retry-After"), strings.TrimSpace(string(msg)), c.cfg.Protocol.RejectReason)
}

// Classify maps an HTTP answer to what the writer does with it, as
// Prometheus's remote-write client does (5xx and 429 are recoverable, other
// 4xx are not), except that 401 and 403 are retried.
func Classify(status int, retryAfter, body string, reason func(int, string) string) error {
	if status/100 == 2 {
		return nil
	}
	err := fmt.Errorf("HTTP %d: %s", status, body)
	switch {
	case status == http.StatusTooManyRequests:
		return &SendError{Class: Throttled, Status: status, RetryAfter: parseRetryAfter(retryAfter), Reason: "throttled", Err: err}
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		// Credentials get fixed; the data waits on the bus meanwhile
		// instead of being thrown away as Prometheus would.
		return &SendError{Class: Retryable, Status: status, Reason: "unauthorized", Err: err}
	case status/100 == 5:
		return &SendError{Class: Retryable, Status: status, RetryAfter: parseRetryAfter(retryAfter), Reason: "http_" + strconv.Itoa(status), Err: err}
	default:
		r := ""
		if reason != nil {
			r = reason(status, body)
		}
		if r == "" {
			r = "http_" + strconv.Itoa(status)
		}
		return &SendError{Class: Permanent, Status: status, Reason: r, Err: err}
	}
}

// parseRetryAfter reads seconds or an HTTP date; 0 when absent or invalid.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
