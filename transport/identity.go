package transport

import (
	"crypto"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/quic-go/quic-go"
)

// Names of the identity files in a state directory.
const (
	KeyFile  = "key.pem"  // PKCS #8 private key, mode 0600
	CertFile = "cert.pem" // self-signed X.509 certificate
)

// ErrNoIdentity is wrapped by [LoadIdentity] when the state directory holds
// no identity.
var ErrNoIdentity = errors.New("no identity found")

// An Identity is a node's private key and self-signed certificate. Its [ID]
// is the SHA-256 of the certificate. An Identity is immutable and safe for
// concurrent use.
type Identity struct {
	cert tls.Certificate
	id   ID
}

// ID returns the node's ID.
func (i *Identity) ID() ID { return i.id }

// TLSCertificate returns the key and certificate for a [tls.Config].
func (i *Identity) TLSCertificate() tls.Certificate { return i.cert }

// statelessResetKey derives a key for QUIC stateless resets from the private
// key, so that a restarted node can tell its peers at once that their
// connections to it are gone.
func (i *Identity) statelessResetKey() *quic.StatelessResetKey {
	var secret []byte
	switch k := i.cert.PrivateKey.(type) {
	case ed25519.PrivateKey:
		secret = k.Seed()
	default:
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil // no stateless resets; connections still time out
		}
		secret = der
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("ntc transport: QUIC stateless reset key v1"))
	var key quic.StatelessResetKey
	copy(key[:], mac.Sum(nil))
	return &key
}

// GenerateIdentity creates a new Ed25519 identity in memory. Use
// [LoadOrCreateIdentity] for one that persists.
func GenerateIdentity() (*Identity, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return newIdentity(key)
}

// newIdentity issues a fresh self-signed certificate for key.
func newIdentity(key crypto.Signer) (*Identity, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "ntc"},
		// Peers pin the certificate by hash and never check its dates.
		NotBefore:             time.Now().Add(-24 * time.Hour).UTC().Truncate(time.Second),
		NotAfter:              time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new certificate: %w", err)
	}
	return &Identity{
		cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		id:   idOf(der),
	}, nil
}

// LoadIdentity reads the identity in dir. When there is none, the error
// matches [ErrNoIdentity] and names dir ([LoadOrCreateIdentity] creates
// one).
func LoadIdentity(dir string) (*Identity, error) {
	keyPEM, certPEM, err := readIdentityFiles(dir)
	if err != nil {
		return nil, err
	}
	if keyPEM == nil || certPEM == nil {
		return nil, fmt.Errorf("%w in %s", ErrNoIdentity, dir)
	}
	if err := checkKeyPrivate(dir); err != nil {
		return nil, err
	}
	return parseIdentity(dir, keyPEM, certPEM)
}

// checkKeyPrivate refuses a key file others may read, as ssh does: anyone
// who reads it can act as this node.
func checkKeyPrivate(dir string) error {
	p := filepath.Join(dir, KeyFile)
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("read identity: %w", err)
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		return fmt.Errorf("%s has mode %#o: others may read this node's key; run `chmod 600 %s`", p, mode, p)
	}
	return nil
}

// LoadOrCreateIdentity reads the identity in dir, or creates one there (and
// makes dir, mode 0700) when there is none; created says which. Files are
// written atomically, the key with mode 0600. If an earlier creation was
// interrupted after the key was written, the key is kept and given a
// certificate. Two processes must not create an identity in the same dir at
// the same time.
func LoadOrCreateIdentity(dir string) (id *Identity, created bool, err error) {
	keyPEM, certPEM, err := readIdentityFiles(dir)
	if err != nil {
		return nil, false, err
	}
	switch {
	case keyPEM != nil && certPEM != nil:
		if err := checkKeyPrivate(dir); err != nil {
			return nil, false, err
		}
		loaded, err := parseIdentity(dir, keyPEM, certPEM)
		return loaded, false, err
	case keyPEM == nil && certPEM != nil:
		return nil, false, fmt.Errorf("%s has %s but no %s: that identity is lost; move %s away to create a new one",
			dir, CertFile, KeyFile, CertFile)
	case keyPEM == nil:
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, false, fmt.Errorf("create state directory: %w", err)
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, false, fmt.Errorf("create state directory: %w", err)
		}
		if id, err = GenerateIdentity(); err != nil {
			return nil, false, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(id.cert.PrivateKey)
		if err != nil {
			return nil, false, fmt.Errorf("encode key: %w", err)
		}
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
		if err := writeFileAtomic(filepath.Join(dir, KeyFile), keyPEM, 0o600); err != nil {
			return nil, false, err
		}
	default: // a key without a certificate: finish what was interrupted
		key, err := parseKey(keyPEM)
		if err != nil {
			return nil, false, fmt.Errorf("read %s: %w", filepath.Join(dir, KeyFile), err)
		}
		if id, err = newIdentity(key); err != nil {
			return nil, false, err
		}
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.cert.Certificate[0]})
	if err := writeFileAtomic(filepath.Join(dir, CertFile), certPEM, 0o644); err != nil {
		return nil, false, err
	}
	return id, true, nil
}

// readIdentityFiles returns the contents of the key and certificate files,
// nil for a file that does not exist.
func readIdentityFiles(dir string) (keyPEM, certPEM []byte, err error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read identity: %w", err)
		}
		return b, nil
	}
	if keyPEM, err = read(KeyFile); err != nil {
		return nil, nil, err
	}
	if certPEM, err = read(CertFile); err != nil {
		return nil, nil, err
	}
	return keyPEM, certPEM, nil
}

func parseIdentity(dir string, keyPEM, certPEM []byte) (*Identity, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load identity from %s (%s, %s): %w", dir, KeyFile, CertFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("load identity from %s: parse %s: %w", dir, CertFile, err)
		}
	}
	return &Identity{cert: cert, id: idOf(cert.Certificate[0])}, nil
}

func parseKey(keyPEM []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("no PEM block of type PRIVATE KEY")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	return signer, nil
}

// writeFileAtomic replaces path with data: a temporary file in the same
// directory is written, synced and renamed over path, then the directory is
// synced, so a crash leaves either the old file or the new one.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close() // already failed; the first error is the one to report
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: close: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	if err := d.Sync(); err != nil {
		_ = d.Close() // the sync error is the one that matters
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("sync %s: close: %w", dir, err)
	}
	return nil
}
