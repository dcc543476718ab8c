package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// authority is the one CA of a test control plane: it signs every serving and client
// certificate, and the API server trusts it for clients, front-proxy requests and webhooks.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

func newAuthority() (*authority, error) {
	key, err := newKey()
	if err != nil {
		return nil, err
	}
	template := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "testbed-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &authority{cert: cert, key: key, pem: pemBlock("CERTIFICATE", der)}, nil
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}

func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

// issued is a certificate and its key, PEM-encoded.
type issued struct {
	cert, key []byte
}

// issue signs a certificate for a server (hosts: IPs and DNS names) or a client (CN is the
// user name, organisations its groups).
func (ca *authority) issue(cn string, groups []string, hosts []string) (issued, error) {
	key, err := newKey()
	if err != nil {
		return issued{}, err
	}
	template := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: groups},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(hosts) > 0 {
		template.ExtKeyUsage = append(template.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				template.IPAddresses = append(template.IPAddresses, ip)
			} else {
				template.DNSNames = append(template.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.cert, key.Public(), ca.key)
	if err != nil {
		return issued{}, err
	}
	k, err := keyPEM(key)
	if err != nil {
		return issued{}, err
	}
	return issued{cert: pemBlock("CERTIFICATE", der), key: k}, nil
}

// write stores the pair as <dir>/<name>.crt and <dir>/<name>.key.
func (i issued) write(dir, name string) (crt, key string, err error) {
	crt = filepath.Join(dir, name+".crt")
	key = filepath.Join(dir, name+".key")
	if err = os.WriteFile(crt, i.cert, 0o600); err != nil {
		return
	}
	err = os.WriteFile(key, i.key, 0o600)
	return
}

// kubeconfig for a client certificate, the CA embedded.
func kubeconfig(server string, ca []byte, client issued, user string) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: testbed
  context: {cluster: testbed, user: %s}
current-context: testbed
`, server, b64(ca), user, b64(client.cert), b64(client.key), user))
}

// serviceAccountKeys writes the key pair the API server signs service-account tokens with.
func serviceAccountKeys(dir string) (private, public string, err error) {
	key, err := newKey()
	if err != nil {
		return "", "", err
	}
	k, err := keyPEM(key)
	if err != nil {
		return "", "", err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return "", "", err
	}
	private = filepath.Join(dir, "sa.key")
	public = filepath.Join(dir, "sa.pub")
	if err = os.WriteFile(private, k, 0o600); err != nil {
		return
	}
	err = os.WriteFile(public, pemBlock("PUBLIC KEY", pub), 0o600)
	return
}
