package tempowriter

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"

	"github.com/watershed-dev/watershed/platform/config"
)

// tlsConfig builds the client TLS of the export from the configuration.
func tlsConfig(c config.ClientTLSConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify, ServerName: c.ServerName} //nolint:gosec // the user's choice, off by default
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("externalServices.tempo.tls.caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("externalServices.tempo.tls.caFile: no PEM certificate in %s", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("externalServices.tempo.tls.certFile: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// authorization is the Authorization header value, "" for none.
func authorization(t config.TempoConfig) string {
	switch {
	case t.BearerToken.String() != "":
		return "Bearer " + t.BearerToken.String()
	case t.BasicAuth.Username != "":
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(t.BasicAuth.Username+":"+t.BasicAuth.Password.String()))
	}
	return ""
}
