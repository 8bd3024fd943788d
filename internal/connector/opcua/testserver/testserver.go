// Package testserver runs the node-opcua test server (test/opcua/server.js)
// as a child process for tests and benchmarks: start, stop, restart on the
// same port, and freeze with SIGSTOP.
package testserver

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config is passed to server.js as JSON; see its header for the meaning.
type Config struct {
	Port           int               `json:"port"`
	PKI            string            `json:"pki"`
	AllowAnonymous bool              `json:"allowAnonymous"`
	Users          map[string]string `json:"users,omitempty"`
	AutoAccept     bool              `json:"autoAccept"`
	Bulk           int               `json:"bulk,omitempty"`
	BulkIntervalMs int               `json:"bulkIntervalMs,omitempty"`
	// MaxNotificationsPerPublish caps a publish response (with Bulk; the
	// default is Bulk).
	MaxNotificationsPerPublish int `json:"maxNotificationsPerPublish,omitempty"`
	// UserPKI is the user-certificate trust store (default: "userpki" in
	// the server's dir); it never accepts an unknown certificate.
	UserPKI string `json:"userPki"`
	// TrustedUserCerts are DER certificates the server accepts as
	// X509IdentityTokens (encoded as base64 in the JSON).
	TrustedUserCerts [][]byte `json:"trustedUserCerts,omitempty"`
	// NodeArgs go to node before the script (e.g. --cpu-prof for a
	// benchmark).
	NodeArgs []string `json:"-"`
}

// Server is a running node-opcua server.
type Server struct {
	// URL is the endpoint URL, opc.tcp://127.0.0.1:<port>.
	URL string
	// Thumbprint is the SHA-1 of the server's certificate.
	Thumbprint string

	cfg    Config
	dir    string
	script string

	// mu guards cmd, stdin and stderr.
	mu     sync.Mutex
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *bytes.Buffer
	waited chan struct{}
}

// Script finds test/opcua/server.js by walking up from the working
// directory, and checks that its node_modules are installed.
func Script() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "test", "opcua", "server.js")
		if _, err := os.Stat(p); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "test", "opcua", "node_modules", "node-opcua")); err != nil {
				return "", fmt.Errorf("node-opcua is not installed: run `npm ci --prefix test/opcua` (scripts/test.sh does)")
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("test/opcua/server.js not found above the working directory")
		}
		dir = parent
	}
}

// Start starts a server with cfg in dir (its HOME and default PKI folder)
// and waits until it listens. Port 0 picks a free port; Restart keeps it.
func Start(dir string, cfg Config) (*Server, error) {
	script, err := Script()
	if err != nil {
		return nil, err
	}
	if cfg.PKI == "" {
		cfg.PKI = filepath.Join(dir, "pki")
	}
	if cfg.UserPKI == "" {
		cfg.UserPKI = filepath.Join(dir, "userpki")
	}
	s := &Server{cfg: cfg, dir: dir, script: script}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

// PKI is the server's PKI folder (node-opcua layout: own/, trusted/, rejected/).
func (s *Server) PKI() string { return s.cfg.PKI }

func (s *Server) start() error {
	arg, err := json.Marshal(s.cfg)
	if err != nil {
		return err
	}
	home := filepath.Join(s.dir, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return err
	}
	cmd := exec.Command("node", append(append([]string{}, s.cfg.NodeArgs...), s.script, string(arg))...)
	cmd.Dir = s.dir
	// node-opcua writes under ~/.config; keep it out of the real home.
	cmd.Env = append(os.Environ(), "HOME="+home)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &lockedWriter{w: &stderr, mu: &s.mu}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting node: %w", err)
	}
	waited := make(chan struct{})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "READY ") {
				select {
				case ready <- line:
				default:
				}
			}
		}
	}()
	go func() {
		cmd.Wait()
		close(waited)
	}()
	s.mu.Lock()
	s.cmd, s.stdin, s.stderr, s.waited = cmd, stdin, &stderr, waited
	s.mu.Unlock()
	select {
	case line := <-ready:
		f := strings.Fields(line)
		if len(f) < 3 {
			s.Stop()
			return fmt.Errorf("bad READY line %q", line)
		}
		s.URL, s.Thumbprint = f[1], f[2]
		if s.cfg.Port == 0 {
			i := strings.LastIndexByte(s.URL, ':')
			fmt.Sscanf(s.URL[i+1:], "%d", &s.cfg.Port)
		}
		return nil
	case <-waited:
		return fmt.Errorf("node-opcua server exited: %s", s.Stderr())
	case <-time.After(60 * time.Second):
		s.Stop()
		return fmt.Errorf("node-opcua server not ready after 60s: %s", s.Stderr())
	}
}

// Stderr returns what the server wrote to stderr so far.
func (s *Server) Stderr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stderr == nil {
		return ""
	}
	return s.stderr.String()
}

// Stop ends the server (closing its stdin, then SIGKILL after 5s) and waits.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, stdin, waited := s.cmd, s.stdin, s.waited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	// A frozen process cannot exit by itself.
	cmd.Process.Signal(syscall.SIGCONT)
	stdin.Close()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-waited
	}
}

// Kill ends the server at once, as a crash would.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, waited := s.cmd, s.waited
	s.mu.Unlock()
	cmd.Process.Kill()
	<-waited
}

// Restart stops the server and starts it again on the same port with the
// same certificate.
func (s *Server) Restart() error {
	s.Stop()
	return s.start()
}

// Freeze stops the process with SIGSTOP: its sockets stay open and silent.
func (s *Server) Freeze() error { return s.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server.
func (s *Server) Thaw() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd.Process.Signal(sig)
}

// TrustedDir is where the server keeps client certificates it trusts.
func (s *Server) TrustedDir() string { return filepath.Join(s.cfg.PKI, "trusted", "certs") }

// RejectedDir is where the server puts client certificates it refused.
func (s *Server) RejectedDir() string { return filepath.Join(s.cfg.PKI, "rejected") }

// UserPKI is the server's user-certificate trust store (node-opcua layout).
func (s *Server) UserPKI() string { return s.cfg.UserPKI }

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// PID is the server process's id (for CPU and memory measurements).
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd.Process.Pid
}
