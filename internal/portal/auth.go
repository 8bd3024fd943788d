package portal

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/edgeport/edgeport/internal/auth"
	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/config"
)

const (
	// CookieName is the session cookie.
	CookieName = "edgeport_session"
	// CSRFHeader carries the session's CSRF token on every write the
	// pages' script makes; forms carry it in the field csrfField.
	CSRFHeader = "X-CSRF-Token"
	csrfField  = "csrf"

	sessionLifetime = 12 * time.Hour
	maxSessions     = 1000

	// Failed logins per remote address before it must wait loginBackoff.
	maxFailures  = 5
	loginBackoff = time.Minute
)

// login is a logged-in browser.
type login struct {
	user    string // "token" for the API token, else the portal user's name
	csrf    string
	expires time.Time
}

// sessions holds the logged-in browsers and the failed-login counts.
type sessions struct {
	mu       sync.Mutex // guards byID and failures
	byID     map[string]*login
	failures map[string]*failure // by remote IP
}

type failure struct {
	n     int
	until time.Time // refused until then once n reached maxFailures
	last  time.Time
}

func newSessions() *sessions {
	return &sessions{byID: make(map[string]*login), failures: make(map[string]*failure)}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand documents it)
	return hex.EncodeToString(b)
}

// create starts a session for user and returns its ID.
func (s *sessions) create(user string, now time.Time) (string, *login) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byID) >= maxSessions {
		// Forget expired sessions, then the one closest to expiry.
		var oldest string
		for id, l := range s.byID {
			if now.After(l.expires) {
				delete(s.byID, id)
			} else if oldest == "" || l.expires.Before(s.byID[oldest].expires) {
				oldest = id
			}
		}
		if len(s.byID) >= maxSessions {
			delete(s.byID, oldest)
		}
	}
	id := randomHex(32)
	l := &login{user: user, csrf: randomHex(32), expires: now.Add(sessionLifetime)}
	s.byID[id] = l
	return id, l
}

func (s *sessions) get(id string, now time.Time) *login {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.byID[id]
	if l != nil && now.After(l.expires) {
		delete(s.byID, id)
		return nil
	}
	return l
}

func (s *sessions) remove(id string) {
	s.mu.Lock()
	delete(s.byID, id)
	s.mu.Unlock()
}

// throttled reports whether ip must wait before trying again.
func (s *sessions) throttled(ip string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.failures[ip]
	return f != nil && now.Before(f.until)
}

func (s *sessions) failed(ip string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failures) > 10000 {
		for k, f := range s.failures {
			if now.Sub(f.last) > loginBackoff {
				delete(s.failures, k)
			}
		}
	}
	f := s.failures[ip]
	if f == nil || now.Sub(f.last) > loginBackoff {
		f = &failure{}
		s.failures[ip] = f
	}
	f.n++
	f.last = now
	if f.n >= maxFailures {
		f.until = now.Add(loginBackoff)
		f.n = 0
	}
}

func (s *sessions) succeeded(ip string) {
	s.mu.Lock()
	delete(s.failures, ip)
	s.mu.Unlock()
}

// checkToken compares a presented API token in constant time.
func checkToken(presented, token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(presented), []byte(token)) == 1
}

// verifyUser checks user and password against the UsernamePassword methods
// marked `portal: true` of every BrokerAuthentication resource.
func verifyUser(ctx context.Context, store *config.Store, user, password string, log *slog.Logger) bool {
	if store == nil || user == "" {
		return false
	}
	for _, obj := range store.List("BrokerAuthentication", config.Selector{}) {
		spec, ok := obj.Spec.(*config.BrokerAuthenticationSpec)
		if !ok {
			continue
		}
		for _, m := range spec.AuthenticationMethods {
			s := m.UsernamePasswordSettings
			if m.Method != config.AuthnUsernamePassword || s == nil || !s.Portal {
				continue
			}
			users := make([]auth.PasswordUser, 0, len(s.Users))
			for _, u := range s.Users {
				users = append(users, auth.PasswordUser{Username: u.Username, PasswordHash: u.PasswordHash})
			}
			pw, err := auth.NewPasswords(s.PasswordFile, users, log)
			if err != nil {
				continue // the resource's status says why
			}
			ci := &broker.ConnectInfo{Username: user, HasUsername: true, Password: []byte(password), HasPassword: true}
			if _, err := pw.Verify(ctx, ci); err == nil {
				return true
			}
		}
	}
	return false
}

// remoteIP is the address failed logins are counted by.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// sameOrigin reports whether a write comes from a page of this server:
// browsers send Origin with every POST, PUT and DELETE; a request without
// one is not a browser's cross-site request.
func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return r.Header.Get("Sec-Fetch-Site") == "" || r.Header.Get("Sec-Fetch-Site") == "same-origin"
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return origin == scheme+"://"+r.Host
}
