package collector

import (
	"time"

	"github.com/prometheus/prometheus/scrape"
)

// healthCheckInterval is how often scrape results are looked at for logging.
const healthCheckInterval = 2 * time.Second

// targetHealth logs each target's scrape failures when they start or
// change, and its recovery, so that a failing target (up 0) has its reason
// in the log without a line per scrape.
type targetHealth struct {
	lastErr map[string]string
}

func newTargetHealth() *targetHealth { return &targetHealth{lastErr: map[string]string{}} }

// check logs what changed and reports whether anything did (a target came,
// went, or changed health), so that the heartbeat can say so at once.
func (h *targetHealth) check(c *Collector) (changed bool) {
	seen := make(map[string]bool, len(h.lastErr))
	for job, targets := range c.manager.TargetsActive() {
		for _, t := range targets {
			key := job + "|" + t.String()
			seen[key] = true
			prev, known := h.lastErr[key]
			if !known {
				h.lastErr[key] = ""
				changed = true
			}
			if t.Health() == scrape.HealthUnknown {
				continue // not scraped yet
			}
			msg := ""
			if err := t.LastError(); err != nil {
				msg = err.Error()
			}
			h.lastErr[key] = msg
			if prev != msg {
				changed = true
			}
			switch {
			case msg != "" && msg != prev:
				c.logger.Warn("scrape failed", "job", job, "target", t.String(), "err", msg)
			case msg == "" && prev != "":
				c.logger.Info("scrape recovered", "job", job, "target", t.String())
			}
		}
	}
	for key := range h.lastErr {
		if !seen[key] {
			delete(h.lastErr, key)
			changed = true
		}
	}
	return changed
}
