package httpwriter

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		name       string
		status     int
		retryAfter string
		body       string
		class      ErrorClass
		reason     string
		delay      time.Duration
	}{
		{name: "ok", status: 200},
		{name: "no content", status: 204},
		{name: "server error", status: 500, class: Retryable, reason: "http_500"},
		{name: "unavailable with delay", status: 503, retryAfter: "7", class: Retryable, reason: "http_503", delay: 7 * time.Second},
		{name: "throttled", status: 429, retryAfter: "3", class: Throttled, reason: "throttled", delay: 3 * time.Second},
		{name: "throttled bad header", status: 429, retryAfter: "soon", class: Throttled, reason: "throttled"},
		{name: "named by the protocol", status: 400, body: "out of order sample", class: Permanent, reason: "out_of_order"},
		{name: "not named by the protocol", status: 400, body: "something else", class: Permanent, reason: "http_400"},
		{name: "other 4xx", status: 413, body: "too big", class: Permanent, reason: "http_413"},
		{name: "unauthorized is retried", status: 401, class: Retryable, reason: "unauthorized"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Classify(c.status, c.retryAfter, c.body, func(_ int, body string) string {
				if body == "out of order sample" {
					return "out_of_order"
				}
				return ""
			})
			if c.status/100 == 2 {
				if err != nil {
					t.Fatalf("2xx gave %v", err)
				}
				return
			}
			var se *SendError
			if !errors.As(err, &se) {
				t.Fatalf("got %v, want a *SendError", err)
			}
			if se.Class != c.class || se.Reason != c.reason || se.RetryAfter != c.delay || se.Status != c.status {
				t.Errorf("got class=%s reason=%s delay=%s status=%d, want %s %s %s %d", se.Class, se.Reason, se.RetryAfter, se.Status, c.class, c.reason, c.delay, c.status)
			}
		})
	}
}

func TestParseRetryAfterDate(t *testing.T) {
	d := parseRetryAfter(time.Now().Add(10 * time.Second).UTC().Format(http.TimeFormat))
	if d < 8*time.Second || d > 10*time.Second {
		t.Errorf("got %s for a date 10s ahead", d)
	}
}

// A writer sending many partitions at once keeps a connection for each:
// Go's default transport would keep two and dial again for the rest of
// every round of requests.
func TestTransportKeepsAConnectionPerConcurrentRequest(t *testing.T) {
	const concurrent, rounds = 16, 5
	var mu sync.Mutex
	dialed := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			dialed++
			mu.Unlock()
		}
	}
	srv.Start()
	defer srv.Close()
	client := &http.Client{Transport: NewTransport()}
	for range rounds {
		var wg sync.WaitGroup
		for range concurrent {
			wg.Go(func() {
				resp, err := client.Post(srv.URL, "text/plain", strings.NewReader("x"))
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			})
		}
		wg.Wait()
	}
	mu.Lock()
	defer mu.Unlock()
	// Go's default transport dials 16 + 14 per later round (72 here).
	if dialed > 2*concurrent {
		t.Errorf("%d connections dialed for %d rounds of %d concurrent requests: idle ones are not kept", dialed, rounds, concurrent)
	}
}
