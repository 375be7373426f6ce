package signing

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
)

// PEM block types of key files.
const (
	pemPrivateKey = "PRIVATE KEY" // PKCS#8
	pemPublicKey  = "PUBLIC KEY"  // PKIX
)

// LoadPrivateKey reads a PKCS#8 PEM ("PRIVATE KEY") Ed25519 private key, as
// written by GenerateKeyFile or `openssl genpkey -algorithm ed25519`. It
// refuses a file that group or others may access (mode & 0o077 != 0).
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("signing: private key file %s does not exist: %w", path, err)
		}
		return nil, fmt.Errorf("signing: opening private key file: %w", err)
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("signing: private key file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("signing: private key file %s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("signing: private key file %s is accessible by group or others (mode %04o); run chmod 600 on it",
			path, st.Mode().Perm())
	}
	data, err := readAll(f, path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("signing: private key file %s is not PEM (want a PKCS#8 %q block)", path, pemPrivateKey)
	}
	if block.Type != pemPrivateKey {
		return nil, fmt.Errorf("signing: private key file %s holds a %q PEM block, want %q (PKCS#8)", path, block.Type, pemPrivateKey)
	}
	return parsePKCS8(block.Bytes, path)
}

func parsePKCS8(der []byte, path string) (ed25519.PrivateKey, error) {
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("signing: private key file %s is not a valid PKCS#8 key: %w", path, err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing: private key file %s holds an %s key, not Ed25519", path, keyKind(key))
	}
	return priv, nil
}

// LoadPublicKey reads an Ed25519 public key from a PKIX PEM ("PUBLIC KEY")
// file, a PKCS#8 private key file (the public key is derived from it), or a
// file holding the base64 of the 32 raw bytes (the WELCOME format).
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("signing: public key file %s does not exist: %w", path, err)
		}
		return nil, fmt.Errorf("signing: opening public key file: %w", err)
	}
	defer func() { _ = f.Close() }()
	data, err := readAll(f, path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		if pub, err := DecodePublicKey(string(bytes.TrimSpace(data))); err == nil {
			return pub, nil
		}
		return nil, fmt.Errorf("signing: public key file %s is neither PEM (%q or %q) nor a base64 Ed25519 key", path, pemPublicKey, pemPrivateKey)
	}
	switch block.Type {
	case pemPublicKey:
		key, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("signing: public key file %s is not a valid PKIX key: %w", path, err)
		}
		pub, ok := key.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("signing: public key file %s holds an %s key, not Ed25519", path, keyKind(key))
		}
		return pub, nil
	case pemPrivateKey:
		priv, err := parsePKCS8(block.Bytes, path)
		if err != nil {
			return nil, err
		}
		return priv.Public().(ed25519.PublicKey), nil
	}
	return nil, fmt.Errorf("signing: public key file %s holds a %q PEM block, want %q or %q", path, block.Type, pemPublicKey, pemPrivateKey)
}

// maxKeyFile bounds what is read from a key file.
const maxKeyFile = 64 << 10

func readAll(f *os.File, path string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("signing: reading key file %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("signing: key file %s is larger than %d bytes", path, maxKeyFile)
	}
	return data, nil
}

func keyKind(key any) string {
	switch key.(type) {
	case ed25519.PrivateKey, ed25519.PublicKey:
		return "Ed25519"
	case *rsa.PrivateKey, *rsa.PublicKey:
		return "RSA"
	case *ecdsa.PrivateKey, *ecdsa.PublicKey:
		return "ECDSA"
	case *ecdh.PrivateKey, *ecdh.PublicKey:
		return "ECDH"
	}
	return fmt.Sprintf("%T", key)
}

// GenerateKeyFile creates a new Ed25519 key and writes it to path as PKCS#8
// PEM with mode 0600. It refuses to overwrite an existing file.
func GenerateKeyFile(path string) (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("signing: generating key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("signing: encoding key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("signing: creating key file: %w", err)
	}
	werr := pem.Encode(f, &pem.Block{Type: pemPrivateKey, Bytes: der})
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("signing: writing key file %s: %w", path, werr)
	}
	return priv, nil
}

// EncodePublicKeyPEM returns pub as a PKIX PEM ("PUBLIC KEY") block, the
// file agents are given to pin the platform key (see LoadPublicKey).
func EncodePublicKeyPEM(pub ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("signing: encoding public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: der}), nil
}
