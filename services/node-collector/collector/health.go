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

func (h *targetHealth) check(c *Collector) {
	seen := make(map[string]bool, len(h.lastErr))
	for job, targets := range c.manager.TargetsActive() {
		for _, t := range targets {
			key := job + "|" + t.String()
			seen[key] = true
			if t.Health() == scrape.HealthUnknown {
				continue
			}
			msg := ""
			if err := t.LastError(); err != nil {
				msg = err.Error()
			}
			prev, known := h.lastErr[key]
			h.lastErr[key] = msg
			switch {
			case msg != "" && msg != prev:
				c.logger.Warn("scrape failed", "job", job, "target", t.String(), "err", msg)
			case msg == "" && known && prev != "":
				c.logger.Info("scrape recovered", "job", job, "target", t.String())
			}
		}
	}
	for key := range h.lastErr {
		if !seen[key] {
			delete(h.lastErr, key)
		}
	}
}
