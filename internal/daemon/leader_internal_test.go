package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/policy"
)

// writeCert writes a self-signed certificate and its key (PEM) to dir.
func writeCert(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestEtcdClientConfig: the state.etcd section becomes a client config:
// the CA and the client certificate are loaded from their files, the
// credentials from their references, and a missing file or variable is an
// error that says which.
func TestEtcdClientConfig(t *testing.T) {
	dir := t.TempDir()
	ca, _ := writeCert(t, dir, "ca")
	cert, key := writeCert(t, dir, "client")
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("etcd-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ETCD_CFG_USER", "rotatord")
	ec := &policy.EtcdConfig{Endpoints: []string{"https://10.0.0.1:2379"}, Prefix: "/r/", LeaseTTL: 10 * time.Second,
		UsernameEnv: "ETCD_CFG_USER", PasswordFile: pw, TLS: policy.EtcdTLS{CAFile: ca, CertFile: cert, KeyFile: key}}
	cc, err := etcdClientConfig(ec)
	if err != nil {
		t.Fatal(err)
	}
	if cc.Username != "rotatord" || cc.Password != "etcd-pw" {
		t.Errorf("credentials %q/%q, want rotatord and the file's password", cc.Username, cc.Password)
	}
	if cc.TLS == nil || cc.TLS.RootCAs == nil || cc.TLS.GetClientCertificate == nil {
		t.Fatal("TLS config without the CA or the client certificate")
	}
	if c, err := cc.TLS.GetClientCertificate(&tls.CertificateRequestInfo{}); err != nil || len(c.Certificate) == 0 {
		t.Errorf("client certificate: %v, %v", c, err)
	}

	for name, tc := range map[string]struct {
		edit func(*policy.EtcdConfig)
		want string
	}{
		"missing CA file":       {func(c *policy.EtcdConfig) { c.TLS.CAFile = filepath.Join(dir, "nope.pem") }, "etcd tls"},
		"missing password file": {func(c *policy.EtcdConfig) { c.PasswordFile = filepath.Join(dir, "nope") }, "etcd password"},
		"unset user variable":   {func(c *policy.EtcdConfig) { c.UsernameEnv = "ETCD_CFG_UNSET" }, "ETCD_CFG_UNSET"},
	} {
		t.Run(name, func(t *testing.T) {
			bad := *ec
			tc.edit(&bad)
			_, err := etcdClientConfig(&bad)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "etcd-pw") {
				t.Errorf("error %v, want one naming %q and no password", err, tc.want)
			}
		})
	}
}
