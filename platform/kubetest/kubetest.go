// Package kubetest starts a real Kubernetes API server for tests: etcd and
// kube-apiserver built from the Go module proxy by hack/k8s-test-binaries.sh
// (make test runs it), on loopback ports, with certificates made for the
// test. There is no kubelet: pods stay Pending unless a test sets their
// status.
package kubetest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Version is the Kubernetes version the binaries are built at.
const Version = "1.37.2"

// BinDir is where etcd and kube-apiserver are: $WATERSHED_K8S_BIN_DIR, or
// the cache hack/k8s-test-binaries.sh fills.
func BinDir() string {
	if d := os.Getenv("WATERSHED_K8S_BIN_DIR"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "watershed", "tools", "k8s", "v"+Version)
}

// Cluster is a running API server.
type Cluster struct {
	// Kubeconfig is a file with cluster-admin (system:masters) credentials.
	Kubeconfig string
	// URL is the API server's https URL.
	URL string
	dir string
}

// Start runs etcd and kube-apiserver until the test ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(BinDir(), b)); err != nil {
			t.Fatalf("%s not found in %s: run the tests with `make test`, which builds it once per machine (%v)", b, BinDir(), err)
		}
	}
	dir := t.TempDir()
	c := &Cluster{dir: dir}
	pki := makePKI(t, dir)
	// Free ports are found by listening and closing: another process may
	// take one before etcd or the API server binds it. Such a start fails
	// at once, and is tried again on other ports.
	const attempts = 3
	for attempt := 1; ; attempt++ {
		run := filepath.Join(dir, fmt.Sprintf("run-%d", attempt))
		if err := os.MkdirAll(run, 0o755); err != nil {
			t.Fatal(err)
		}
		etcdClient, etcdPeer, apiPort := freePort(t), freePort(t), freePort(t)
		etcd := start(t, run, "etcd",
			"--name=test", "--data-dir="+filepath.Join(run, "etcd"),
			"--listen-client-urls=http://127.0.0.1:"+etcdClient, "--advertise-client-urls=http://127.0.0.1:"+etcdClient,
			"--listen-peer-urls=http://127.0.0.1:"+etcdPeer, "--initial-advertise-peer-urls=http://127.0.0.1:"+etcdPeer,
			"--initial-cluster=test=http://127.0.0.1:"+etcdPeer, "--log-level=warn")
		api := start(t, run, "kube-apiserver",
			"--etcd-servers=http://127.0.0.1:"+etcdClient,
			"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+apiPort,
			"--cert-dir="+filepath.Join(run, "certs"),
			"--tls-cert-file="+pki.serverCert, "--tls-private-key-file="+pki.serverKey,
			"--client-ca-file="+pki.caCert,
			"--service-account-issuer=https://kubernetes.default.svc", "--service-account-key-file="+pki.saPub,
			"--service-account-signing-key-file="+pki.saKey,
			"--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=RBAC",
			"--endpoint-reconciler-type=none", "--disable-admission-plugins=ServiceAccount")
		url := "https://127.0.0.1:" + apiPort
		err := waitReady(url, pki, etcd, api)
		if err == nil {
			c.URL = url
			break
		}
		exited := etcd.exited() || api.exited()
		api.stop()
		etcd.stop()
		if !exited || attempt == attempts {
			t.Fatalf("%v\netcd log (tail):\n%s\nkube-apiserver log (tail):\n%s", err, etcd.logTail(), api.logTail())
		}
		t.Logf("kube-apiserver start %d failed (%v), trying other ports", attempt, err)
	}
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, []byte(kubeconfig(c.URL, pki)), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// process is etcd or kube-apiserver, stopped when the test ends.
type process struct {
	name, logPath string
	cmd           *exec.Cmd
	done          chan struct{}
}

func start(t testing.TB, dir, name string, args ...string) *process {
	t.Helper()
	p := &process{name: name, logPath: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	log, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(filepath.Join(BinDir(), name), args...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); _ = log.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", name, p.logTail())
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *process) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// waitReady polls /readyz with the admin certificate until it answers 200,
// one of the processes exits, or 90 s pass.
func waitReady(url string, p pki, procs ...*process) error {
	cert, err := tls.LoadX509KeyPair(p.adminCert, p.adminKey)
	if err != nil {
		return err
	}
	caPEM, _ := os.ReadFile(p.caCert)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	deadline := time.Now().Add(90 * time.Second)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for time.Now().Before(deadline) {
		for _, proc := range procs {
			if proc.exited() {
				return fmt.Errorf("%s exited before the API server was ready (last: %s)", proc.name, last)
			}
		}
		resp, err := client.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		<-tick.C
	}
	return fmt.Errorf("kube-apiserver not ready after 90s: %s", last)
}

type pki struct {
	caCert, serverCert, serverKey, adminCert, adminKey, saKey, saPub string
}

// makePKI writes a CA, a serving certificate for 127.0.0.1, an admin client
// certificate in system:masters and a service-account key pair.
func makePKI(t testing.TB, dir string) pki {
	t.Helper()
	p := pki{}
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "watershed-test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p.caCert = writePEM(t, dir, "ca.crt", "CERTIFICATE", caDER)
	issue := func(name string, serial int64, tmpl *x509.Certificate) (string, string) {
		key := newKey(t)
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return writePEM(t, dir, name+".crt", "CERTIFICATE", der),
			writePEM(t, dir, name+".key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))
	}
	p.serverCert, p.serverKey = issue("apiserver", 2, &x509.Certificate{
		Subject: pkix.Name{CommonName: "kube-apiserver"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	})
	p.adminCert, p.adminKey = issue("admin", 3, &x509.Certificate{
		Subject: pkix.Name{CommonName: "watershed-test-admin", Organization: []string{"system:masters"}}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	sa := newKey(t)
	p.saKey = writePEM(t, dir, "sa.key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(sa))
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p.saPub = writePEM(t, dir, "sa.pub", "PUBLIC KEY", pub)
	return p
}

func newKey(t testing.TB) *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func kubeconfig(url string, p pki) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, url, p.caCert, p.adminCert, p.adminKey)
}
