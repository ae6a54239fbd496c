package logtail

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// journalRemote finds systemd's journal writer, which `make test` installs
// (Debian's systemd-journal-remote).
func journalRemote(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"systemd-journal-remote", "/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatal("systemd-journal-remote is not installed: run the tests with `make test`, which installs it")
	return ""
}

var journalBase = time.Now().Add(-time.Hour).Truncate(time.Second)

// writeJournal writes entries from..to-1 into a new journal file of dir,
// with systemd's own writer, from an export-format stream.
func writeJournal(t *testing.T, dir, name string, from, to int, age time.Duration) {
	t.Helper()
	var sb strings.Builder
	for i := from; i < to; i++ {
		unit := "a.service"
		if i%2 == 1 {
			unit = "b.service"
		}
		ts := journalBase.Add(-age).Add(time.Duration(i) * time.Millisecond)
		fmt.Fprintf(&sb, "__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_SYSTEMD_UNIT=%s\nPRIORITY=%d\nMESSAGE=%s\n\n",
			ts.UnixMicro(), i+1, unit, i%8, journalLine(i))
	}
	cmd := exec.Command(journalRemote(t), "--output="+filepath.Join(dir, name+".journal"), "-")
	cmd.Stdin = strings.NewReader(sb.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-journal-remote: %v\n%s", err, out)
	}
}

func journalLine(i int) string { return fmt.Sprintf("journal entry %04d", i) }

func newJournalRig(t *testing.T) (*rig, string) {
	r := newRig(t)
	dir := t.TempDir()
	r.cfg.Logs.Files = nil
	r.cfg.Logs.Journal.Enabled = true
	r.cfg.Logs.Journal.Path = dir
	r.cfg.Logs.Journal.MaxAge = 24 * time.Hour
	return r, dir
}

// receiveJournal waits for the given entries, each exactly once.
func (r *rig) receiveJournal(want []int) {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(r.seen) < len(want) {
		if time.Now().After(deadline) {
			r.t.Fatalf("received %d of %d journal entries", len(r.seen), len(want))
		}
		r.drain(300 * time.Millisecond)
	}
	r.drain(300 * time.Millisecond)
	for _, i := range want {
		if c := r.seen[journalLine(i)]; c != 1 {
			r.t.Errorf("%q received %d times", journalLine(i), c)
		}
	}
	if len(r.seen) != len(want) {
		r.t.Errorf("received %d distinct entries, want %d", len(r.seen), len(want))
	}
}

func TestJournalUnitsLabelsAndTimestamps(t *testing.T) {
	r, dir := newJournalRig(t)
	r.cfg.Logs.Journal.Units = []string{"a.service"}
	writeJournal(t, dir, "one", 0, 40, 0)
	r.start()
	var want []int
	for i := 0; i < 40; i += 2 {
		want = append(want, i)
	}
	r.receiveJournal(want)
	if got, exp := r.labels[journalLine(3*2)], `{cluster="test", job="integrations/kubernetes/journal", level="info", node="node-a", unit="a.service"}`; got != exp {
		t.Errorf("labels %s, want %s", got, exp)
	}
	if got, exp := r.times[journalLine(6)], journalBase.Add(6*time.Millisecond); !got.Equal(exp) {
		t.Errorf("time %s, want %s", got, exp)
	}
	if got := fmt.Sprint(r.meta[journalLine(0)]); got != "[{boot_id 0123456789abcdef0123456789abcdef}]" {
		t.Errorf("structured metadata %s", got)
	}
}

func TestJournalMaxAge(t *testing.T) {
	r, dir := newJournalRig(t)
	r.cfg.Logs.Journal.MaxAge = 2 * time.Hour
	writeJournal(t, dir, "old", 0, 10, 48*time.Hour)
	writeJournal(t, dir, "new", 10, 20, 0)
	r.start()
	r.receiveJournal([]int{10, 11, 12, 13, 14, 15, 16, 17, 18, 19})
}

func TestJournalResumesFromCursor(t *testing.T) {
	r, dir := newJournalRig(t)
	writeJournal(t, dir, "one", 0, 100, 0)
	r.start()
	all := make([]int, 0, 200)
	for i := range 100 {
		all = append(all, i)
	}
	r.receiveJournal(all)
	r.stop()

	// As if killed between the publish and the position update: the
	// batch is sent again under the same id, and JetStream drops it.
	editPositions(t, r.cfg.Logs.Tail.PositionsDirectory, func(p *positions) {
		key := "journal:" + dir
		pos, _ := p.get(key)
		p.set(key, position{PendingCursor: pos.Cursor})
	})
	writeJournal(t, dir, "two", 100, 200, 0)
	r.start()
	for i := 100; i < 200; i++ {
		all = append(all, i)
	}
	r.receiveJournal(all)
	if got := r.counter("watershed_bus_publish_duplicates_total"); got != 1 {
		t.Errorf("duplicates = %v, want 1 (the replayed batch)", got)
	}
}
