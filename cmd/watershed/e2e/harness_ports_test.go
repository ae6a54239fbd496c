package e2e

import (
	"net"
	"testing"
)

// TestAllInOneStartsAgainWhenAReceiverPortIsTaken: a receiver port the
// test picked is taken by another process before the all-in-one binds
// it. The harness must start the all-in-one again on other ports, not
// fail the test that only wanted a running router.
func TestAllInOneStartsAgainWhenAReceiverPortIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := baseConfig(t, t.TempDir(), "http://127.0.0.1:1")
	tracesConfig(t, cfg, "127.0.0.1:1")
	cfg.Receivers.HTTP.Port = portOf(t, taken.Addr().String())

	a := startAllInOne(t, cfg, "router")

	if !a.proc.Ready() {
		t.Fatal("all-in-one not ready")
	}
	if got := cfg.Receivers.HTTP.Port; got == portOf(t, taken.Addr().String()) {
		t.Fatalf("OTLP HTTP receiver still on the taken port %d", got)
	}
	addr := cfg.Receivers.Address(cfg.Receivers.HTTP)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("OTLP HTTP receiver not listening on its new address %s: %v", addr, err)
	}
	conn.Close()
}
