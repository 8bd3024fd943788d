package api

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgeport/edgeport/internal/config"
)

// TokenFile is the name of the API token file in the data directory.
const TokenFile = "api-token"

// EnsureToken returns the API token of a data directory, generating it (32
// random bytes, hex) into <dataDir>/api-token, readable by the owner only,
// on first start. An operator may replace the file's content with a token
// of their own.
func EnsureToken(dataDir string) (string, error) {
	tok, err := ReadToken(dataDir)
	if err == nil {
		return tok, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating API token: %w", err)
	}
	tok = hex.EncodeToString(b[:])
	if err := config.WriteFileAtomic(filepath.Join(dataDir, TokenFile), []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing API token: %w", err)
	}
	return tok, nil
}

// ReadToken reads the API token of a data directory.
func ReadToken(dataDir string) (string, error) {
	path := filepath.Join(dataDir, TokenFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading API token: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if len(tok) < 16 || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("API token in %s: must be at least 16 characters without spaces", path)
	}
	return tok, nil
}
