package tempowriter

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/watershed-dev/watershed/platform/config"
)

// selfSigned makes a certificate for 127.0.0.1 and writes it to caFile.
func selfSigned(t *testing.T, caFile string) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tempo"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestTLSAndBearerToken: with https:// and tls.caFile the export goes over
// TLS, verified against the CA, with the bearer token in its metadata.
func TestTLSAndBearerToken(t *testing.T) {
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	cert := selfSigned(t, caFile)
	be := &otlpBackend{tenants: map[string]bool{}, encoding: map[string]bool{}}
	auth := make(chan string, 100)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&cert)), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			for _, a := range md.Get("authorization") {
				auth <- a
			}
			return h(ctx, req)
		}))
	ptraceotlp.RegisterGRPCServer(s, be)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)

	tempo := config.Default().ExternalServices.Tempo
	tempo.Host, tempo.TLS.CAFile = "https://"+l.Addr().String(), caFile
	if err := tempo.BearerToken.Set("s3cret"); err != nil {
		t.Fatal(err)
	}
	b, _ := startWriter(t, tempo)
	publishSpans(t, b, 1, 5, "")
	waitFor(t, "acks over TLS", func() bool { return allAcked(t, b) && be.received() == 5 })
	if got := <-auth; got != "Bearer s3cret" {
		t.Errorf("authorization %q", got)
	}
}
