package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/watershed-dev/watershed/platform/config"
)

// hugePage is a 50 MB exposition page, made once. It is made with
// appends, not Fprintf: under the race detector on a slow machine, 3.3M
// Fprintf calls took longer than the scrape timeout, and every scrape
// that waited for the page failed on the timeout instead of the limit.
var hugePage = sync.OnceValue(func() []byte {
	const size = 50 << 20
	b := make([]byte, 0, size+64)
	for i := 0; len(b) < size; i++ {
		b = append(b, `huge_metric{series="`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, "\"} 1\n"...)
	}
	return b
})

// TestBadTargetsFailOnlyTheirScrape serves garbage, a 50 MB page and
// invalid label names next to a healthy target: each bad one gets up 0 and
// a logged reason, the healthy one keeps flowing, and nothing crashes.
func TestBadTargetsFailOnlyTheirScrape(t *testing.T) {
	handlers := map[string]http.HandlerFunc{
		"garbage": func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, "<html>this is { not an exposition }}}\n\x00\x01\x02")
		},
		"huge": func(w http.ResponseWriter, _ *http.Request) {
			// Stops as soon as the scraper hangs up at its body size limit.
			for chunk := hugePage(); len(chunk) > 0; chunk = chunk[min(len(chunk), 1<<16):] {
				if _, err := w.Write(chunk[:min(len(chunk), 1<<16)]); err != nil {
					return
				}
			}
		},
		"badlabels": func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, "bad_metric{0bad=\"x\"} 1\n")
		},
		"good": func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, "# TYPE good_metric gauge\ngood_metric 42\n")
		},
	}
	p := startPrometheus(t)
	cfg := baseConfig(t, t.TempDir(), p.url())
	// The 50 MB page must fail on the body size limit, not on the timeout:
	// reading up to the default 32 MiB under the race detector on a busy
	// machine can take longer than the scrape timeout.
	cfg.Metrics.BodySizeLimit = 4 << 20
	for job, h := range handlers {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		st := config.StaticTarget{Job: job, Targets: []string{strings.TrimPrefix(srv.URL, "http://")}}
		if job == "huge" {
			st.ScrapeInterval, st.ScrapeTimeout = 5*time.Second, 5*time.Second
		}
		cfg.Metrics.StaticTargets = append(cfg.Metrics.StaticTargets, st)
	}
	// Made before the first scrape, so that no scrape waits for it.
	hugePage()
	a := startAllInOne(t, cfg)

	for _, tc := range []struct {
		job    string
		up     float64
		reason string
	}{
		{"garbage", 0, "scrape failed"},
		{"huge", 0, "body size limit"},
		{"badlabels", 0, "scrape failed"},
		{"good", 1, ""},
	} {
		t.Run(tc.job, func(t *testing.T) {
			waitFor(t, 30*time.Second, "up of "+tc.job, func() (bool, string) {
				v, ok := p.scalar(t, fmt.Sprintf(`up{job=%q}`, tc.job))
				return ok && v == tc.up, fmt.Sprintf("up=%v present=%v", v, ok)
			})
			if tc.reason == "" {
				return
			}
			waitFor(t, 10*time.Second, "a logged reason for "+tc.job, func() (bool, string) {
				for _, line := range strings.Split(a.logs.String(), "\n") {
					if strings.Contains(line, `"scrape failed"`) && strings.Contains(line, `"job":"`+tc.job+`"`) && strings.Contains(line, tc.reason) {
						return true, ""
					}
				}
				return false, "no such log line"
			})
		})
	}
	waitFor(t, 10*time.Second, "good_metric", func() (bool, string) {
		v, ok := p.scalar(t, `good_metric{job="good",cluster="e2e"}`)
		return ok && v == 42, fmt.Sprintf("good_metric=%v", v)
	})
	if !a.proc.Ready() {
		t.Error("all-in-one is no longer ready after bad targets")
	}
}
