package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Argon2id parameters of HashPassword: OWASP's recommended minimum (19 MiB,
// two passes, one lane), a few tens of milliseconds per check.
const (
	Argon2Time    = 2
	Argon2Memory  = 19 * 1024 // KiB
	Argon2Threads = 1
	argon2KeyLen  = 32
	argon2SaltLen = 16
)

// Bounds on the parameters of hashes read from files and resources, so a
// hash cannot make one check take gigabytes or minutes.
const (
	maxArgon2Memory = 1 << 20 // KiB: 1 GiB
	maxArgon2Time   = 64
)

// HashPassword returns an argon2id hash of password in the PHC string
// format: $argon2id$v=19$m=19456,t=2,p=1$salt$hash.
func HashPassword(password []byte) (string, error) {
	salt := make([]byte, argon2SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	key := argon2.IDKey(password, salt, Argon2Time, Argon2Memory, Argon2Threads, argon2KeyLen)
	return encodeArgon2(argon2Params{time: Argon2Time, memory: Argon2Memory, threads: Argon2Threads}, salt, key), nil
}

// HashPasswordBcrypt returns a bcrypt hash of password (at most 72 bytes).
func HashPasswordBcrypt(password []byte, cost int) (string, error) {
	h, err := bcrypt.GenerateFromPassword(password, cost)
	if err != nil {
		return "", fmt.Errorf("bcrypt: %w", err)
	}
	return string(h), nil
}

type argon2Params struct {
	time, memory uint32
	threads      uint8
}

func encodeArgon2(p argon2Params, salt, key []byte) string {
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.memory, p.time, p.threads,
		enc.EncodeToString(salt), enc.EncodeToString(key))
}

// verifier checks passwords against one parsed hash.
type verifier interface {
	verify(password []byte) bool
	// decoy returns a verifier with the same cost and a random secret, for
	// unknown users to take as long as known ones.
	decoy() (verifier, error)
}

// parseHash parses an argon2id (PHC) or bcrypt ($2a$, $2b$, $2y$) hash.
func parseHash(h string) (verifier, error) {
	switch {
	case strings.HasPrefix(h, "$argon2id$"):
		return parseArgon2(h)
	case strings.HasPrefix(h, "$2a$"), strings.HasPrefix(h, "$2b$"), strings.HasPrefix(h, "$2y$"):
		cost, err := bcrypt.Cost([]byte(h))
		if err != nil {
			return nil, fmt.Errorf("bcrypt hash: %w", err)
		}
		return bcryptHash{hash: []byte(h), cost: cost}, nil
	}
	return nil, errors.New("not an argon2id or bcrypt hash")
}

type argon2Hash struct {
	p         argon2Params
	salt, key []byte
}

func parseArgon2(h string) (*argon2Hash, error) {
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	parts := strings.Split(h, "$")
	if len(parts) != 6 {
		return nil, errors.New("argon2id hash: want $argon2id$v=19$m=M,t=T,p=P$salt$hash")
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return nil, fmt.Errorf("argon2id hash: version %q, want v=%d", parts[2], argon2.Version)
	}
	a := &argon2Hash{}
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("argon2id hash: parameter %q", kv)
		}
		switch k {
		case "m":
			a.p.memory = uint32(n)
		case "t":
			a.p.time = uint32(n)
		case "p":
			if n > 255 {
				return nil, fmt.Errorf("argon2id hash: parameter %q", kv)
			}
			a.p.threads = uint8(n)
		default:
			return nil, fmt.Errorf("argon2id hash: parameter %q", kv)
		}
	}
	if a.p.time < 1 || a.p.time > maxArgon2Time || a.p.threads < 1 || a.p.memory < 8*uint32(a.p.threads) || a.p.memory > maxArgon2Memory {
		return nil, fmt.Errorf("argon2id hash: parameters %s out of range (m ≤ %d KiB, t ≤ %d)", parts[3], maxArgon2Memory, maxArgon2Time)
	}
	var err error
	if a.salt, err = base64.RawStdEncoding.DecodeString(parts[4]); err != nil || len(a.salt) < 8 {
		return nil, errors.New("argon2id hash: bad salt")
	}
	if a.key, err = base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(a.key) < 16 || len(a.key) > 128 {
		return nil, errors.New("argon2id hash: bad hash")
	}
	return a, nil
}

func (a *argon2Hash) verify(password []byte) bool {
	key := argon2.IDKey(password, a.salt, a.p.time, a.p.memory, a.p.threads, uint32(len(a.key)))
	return subtle.ConstantTimeCompare(key, a.key) == 1
}

func (a *argon2Hash) decoy() (verifier, error) {
	d := &argon2Hash{p: a.p, salt: make([]byte, len(a.salt)), key: make([]byte, len(a.key))}
	if _, err := rand.Read(d.salt); err != nil {
		return nil, err
	}
	_, err := rand.Read(d.key)
	return d, err
}

type bcryptHash struct {
	hash []byte
	cost int
}

func (b bcryptHash) verify(password []byte) bool {
	return bcrypt.CompareHashAndPassword(b.hash, password) == nil
}

func (b bcryptHash) decoy() (verifier, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	h, err := bcrypt.GenerateFromPassword(secret, b.cost)
	return bcryptHash{hash: h, cost: b.cost}, err
}

// PasswordUser is a user of the UsernamePassword method.
type PasswordUser struct {
	Username     string
	PasswordHash string
	Attributes   map[string]string
}

type pwUser struct {
	v     verifier
	attrs map[string]string
}

// Passwords is the UsernamePassword method: MQTT user name and password
// checked against argon2id or bcrypt hashes, from a file (reloaded when it
// changes) and given users. Checks are constant-time, an unknown user costs
// what a wrong password does, and at most one check per CPU runs at once,
// bounding the memory argon2id takes under a flood of attempts.
type Passwords struct {
	file   string
	inline map[string]*pwUser
	log    *slog.Logger
	sem    chan struct{}

	mu        sync.RWMutex
	users     map[string]*pwUser // file users over inline ones
	decoy     verifier
	stamp     fileStamp
	checked   time.Time
	loadErr   error
	reloadGap time.Duration
}

var _ Method = (*Passwords)(nil)

// NewPasswords builds the method. A missing or unreadable file is not an
// error here (its users are simply absent until it can be read; Status
// says why); a malformed inline user is.
func NewPasswords(file string, users []PasswordUser, log *slog.Logger) (*Passwords, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pw := &Passwords{file: file, inline: make(map[string]*pwUser), log: log,
		sem: make(chan struct{}, runtime.NumCPU()), reloadGap: time.Second}
	for _, u := range users {
		v, err := parseHash(u.PasswordHash)
		if err != nil {
			return nil, fmt.Errorf("user %q: %w", u.Username, err)
		}
		pw.inline[u.Username] = &pwUser{v: v, attrs: u.Attributes}
	}
	pw.mu.Lock()
	pw.reloadLocked(time.Now(), true)
	pw.mu.Unlock()
	return pw, nil
}

// Name implements Method.
func (*Passwords) Name() string { return MethodUsernamePassword }

// Applies implements Method: a CONNECT with a user name other than K8S-SAT
// (which carries a token) and no enhanced authentication.
func (*Passwords) Applies(ci *broker.ConnectInfo) bool {
	return ci.AuthMethod == "" && ci.HasUsername && ci.Username != SATMethod
}

// Status reports a problem with the password file, if any.
func (pw *Passwords) Status() error {
	pw.mu.RLock()
	defer pw.mu.RUnlock()
	return pw.loadErr
}

// Verify implements Method.
func (pw *Passwords) Verify(ctx context.Context, ci *broker.ConnectInfo) (*broker.Principal, error) {
	now := time.Now()
	pw.mu.RLock()
	due := pw.file != "" && now.Sub(pw.checked) >= pw.reloadGap
	pw.mu.RUnlock()
	if due {
		pw.mu.Lock()
		if now.Sub(pw.checked) >= pw.reloadGap {
			pw.reloadLocked(now, false)
		}
		pw.mu.Unlock()
	}
	pw.mu.RLock()
	u, known := pw.users[ci.Username]
	decoy := pw.decoy
	pw.mu.RUnlock()
	v := decoy
	if known {
		v = u.v
	}
	select {
	case pw.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, &broker.AuthError{Code: packet.ServerBusy, Method: MethodUsernamePassword, Err: ctx.Err()}
	}
	ok := v != nil && v.verify(ci.Password)
	<-pw.sem
	if !known {
		return nil, deny(MethodUsernamePassword, packet.BadUserNameOrPassword, "unknown user "+strconv.Quote(ci.Username))
	}
	if !ok {
		return nil, deny(MethodUsernamePassword, packet.BadUserNameOrPassword, "wrong password for user "+strconv.Quote(ci.Username))
	}
	return &broker.Principal{Username: ci.Username, Attributes: u.attrs}, nil
}

// reloadLocked reads the password file if it changed. A file that cannot
// be read or parsed leaves the users as they were (none at the start) and
// is logged once. pw.mu is held.
func (pw *Passwords) reloadLocked(now time.Time, first bool) {
	pw.checked = now
	if pw.file == "" {
		if first {
			pw.setUsersLocked(nil)
		}
		return
	}
	st, err := statFile(pw.file)
	if err == nil && st == pw.stamp && !first {
		return
	}
	var fileUsers map[string]*pwUser
	if err == nil {
		fileUsers, err = readPasswordFile(pw.file)
	}
	if err != nil {
		if pw.loadErr == nil || pw.loadErr.Error() != err.Error() {
			pw.log.Warn("password file not loaded; its users cannot connect until it is fixed", "file", pw.file, "err", err)
		}
		pw.loadErr = err
		if first {
			pw.setUsersLocked(nil)
		}
		return
	}
	pw.stamp, pw.loadErr = st, nil
	pw.setUsersLocked(fileUsers)
	if !first {
		pw.log.Info("password file reloaded", "file", pw.file, "users", len(fileUsers))
	}
}

func (pw *Passwords) setUsersLocked(fileUsers map[string]*pwUser) {
	users := make(map[string]*pwUser, len(pw.inline)+len(fileUsers))
	for n, u := range pw.inline {
		users[n] = u
	}
	for n, u := range fileUsers {
		users[n] = u
	}
	pw.users = users
	// The decoy costs what the first user's hash does: most files use one
	// algorithm and one set of parameters.
	var model verifier
	for _, u := range users {
		model = u.v
		break
	}
	if model == nil {
		if pw.decoy != nil {
			return
		}
		model = &argon2Hash{p: argon2Params{time: Argon2Time, memory: Argon2Memory, threads: Argon2Threads},
			salt: make([]byte, argon2SaltLen), key: make([]byte, argon2KeyLen)}
	}
	if d, err := model.decoy(); err == nil {
		pw.decoy = d
	}
}

// readPasswordFile parses lines "username:hash[:attr=value,attr=value]";
// blank lines and lines starting with # are skipped.
func readPasswordFile(path string) (map[string]*pwUser, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	users := make(map[string]*pwUser)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("%s:%d: want username:hash", path, n)
		}
		hash, attrText, _ := strings.Cut(rest, ":")
		v, err := parseHash(hash)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: user %q: %w", path, n, name, err)
		}
		u := &pwUser{v: v}
		if attrText != "" {
			u.attrs = make(map[string]string)
			for _, kv := range strings.Split(attrText, ",") {
				k, val, ok := strings.Cut(kv, "=")
				if !ok || strings.TrimSpace(k) == "" {
					return nil, fmt.Errorf("%s:%d: user %q: attribute %q is not name=value", path, n, name, kv)
				}
				u.attrs[strings.TrimSpace(k)] = strings.TrimSpace(val)
			}
		}
		if _, dup := users[name]; dup {
			return nil, fmt.Errorf("%s:%d: user %q appears twice", path, n, name)
		}
		users[name] = u
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return users, nil
}

// fileStamp identifies a version of a file cheaply.
type fileStamp struct {
	mod  time.Time
	size int64
}

func statFile(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}
