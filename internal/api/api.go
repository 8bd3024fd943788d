// Package api serves Edgeport's resources over HTTP under /api/v1: list,
// get, create, replace, delete, status and events, with JSON errors.
package api

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/edgeport/edgeport/internal/config"
)

// Prefix is where the API is mounted.
const Prefix = "/api/v1"

// DefaultMaxBody bounds a request body; resources are small.
const DefaultMaxBody = 1 << 20

// ResultHeader tells a PUT's client whether it created, configured or left
// the resource unchanged.
const ResultHeader = "Edgeport-Result"

// Options configure the API.
type Options struct {
	// Token is the bearer token. A request that carries a token must carry
	// this one, wherever it comes from.
	Token string
	// RequireToken makes every request carry the token: the HTTP server
	// listens beyond loopback.
	RequireToken bool
	// Dir, when set, is the config directory whose problems
	// GET /api/v1/configdir reports.
	Dir *config.Dir
	// MaxBody bounds request bodies (default DefaultMaxBody).
	MaxBody int64
}

// Server is the API handler.
type Server struct {
	store *config.Store
	kinds *config.Kinds
	opts  Options
	log   *slog.Logger
}

// New returns the API over store. A nil log discards.
func New(store *config.Store, opts Options, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = DefaultMaxBody
	}
	return &Server{store: store, kinds: store.Kinds(), opts: opts, log: log}
}

// ErrorBody is the JSON of every error response.
type ErrorBody struct {
	Error   string   `json:"error"`
	Details []string `json:"details,omitempty"`
}

// List is the JSON of a list response.
type List struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Items      []*config.Object `json:"items"`
}

// KindInfo describes a kind in the discovery document (GET /api/v1).
type KindInfo struct {
	Kind       string   `json:"kind"`
	Plural     string   `json:"plural"`
	Singular   string   `json:"singular"`
	ShortNames []string `json:"shortNames,omitempty"`
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		// One broken handler must answer 500, not drop the connection.
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("API handler panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v))
			writeError(w, http.StatusInternalServerError, "internal error", nil)
		}
	}()
	w.Header().Set("Cache-Control", "no-store")
	if !s.admit(w, r) {
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		writeError(w, http.StatusNotFound, "not found", nil)
		return
	}
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	if len(parts) == 1 && parts[0] == "" {
		s.discovery(w, r)
		return
	}
	if parts[0] == "configdir" && len(parts) == 1 {
		s.configDir(w, r)
		return
	}
	def := s.kinds.Lookup(parts[0])
	if def == nil || def.Plural != parts[0] {
		var plurals []string
		for _, d := range s.kinds.All() {
			plurals = append(plurals, d.Plural)
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown resource type %q (one of %s)", parts[0], strings.Join(plurals, ", ")), nil)
		return
	}
	switch len(parts) {
	case 1:
		switch r.Method {
		case http.MethodGet:
			s.list(w, r, def)
		case http.MethodPost:
			s.apply(w, r, def, "", true)
		default:
			methodNotAllowed(w, "GET, POST")
		}
	case 2:
		switch r.Method {
		case http.MethodGet:
			s.get(w, r, def, parts[1], "")
		case http.MethodPut:
			s.apply(w, r, def, parts[1], false)
		case http.MethodDelete:
			s.delete(w, def, parts[1])
		default:
			methodNotAllowed(w, "GET, PUT, DELETE")
		}
	case 3:
		if parts[2] != "status" && parts[2] != "events" {
			writeError(w, http.StatusNotFound, fmt.Sprintf("unknown subresource %q (status or events)", parts[2]), nil)
			return
		}
		if r.Method != http.MethodGet {
			methodNotAllowed(w, "GET")
			return
		}
		s.get(w, r, def, parts[1], parts[2])
	default:
		writeError(w, http.StatusNotFound, "not found", nil)
	}
}

// admit applies the access rules to r; when they refuse it, it writes the
// error response and returns false.
func (s *Server) admit(w http.ResponseWriter, r *http.Request) bool {
	code, msg := s.authorize(r)
	if code == 0 {
		return true
	}
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="edgeport"`)
	}
	writeError(w, code, msg, nil)
	return false
}

// Protect serves h under the API's access rules (Options.Token and
// RequireToken). Endpoints that reveal as much about the instance as the
// API does, such as /statusz, are mounted through it.
func (s *Server) Protect(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if s.admit(w, r) {
			h.ServeHTTP(w, r)
		}
	})
}

// authorize returns a status and message when the request may not proceed.
func (s *Server) authorize(r *http.Request) (int, string) {
	if tok, ok := bearer(r); ok {
		if s.opts.Token == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(s.opts.Token)) != 1 {
			return http.StatusUnauthorized, "invalid bearer token"
		}
		return 0, ""
	}
	if r.Header.Get("Authorization") != "" {
		return http.StatusUnauthorized, "the Authorization header must be: Bearer TOKEN"
	}
	if s.opts.RequireToken {
		return http.StatusUnauthorized, "a bearer token is required: run `edgeport token` on the server and pass it with --token or EDGEPORT_TOKEN"
	}
	// Without a token only local programs may call. A web page the user
	// visits can make the browser send requests to loopback, under a
	// hostname of its own that resolves to 127.0.0.1 (DNS rebinding):
	// such requests do not name a loopback host, and are refused.
	if !LoopbackHost(r) {
		return http.StatusForbidden, fmt.Sprintf("host %q is not a loopback address: a bearer token is required", r.Host)
	}
	return 0, ""
}

// LoopbackHost reports whether r names a loopback host (localhost or a
// loopback IP address) in its Host header. A request that does not was
// either sent to another address or comes from a web page that made its
// own host name resolve to 127.0.0.1 (DNS rebinding); the API and the
// portal serve it only to those who prove they hold the token.
func LoopbackHost(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed (allowed: "+allow+")", nil)
}

func (s *Server) discovery(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, "GET")
		return
	}
	var out []KindInfo
	for _, d := range s.kinds.All() {
		out = append(out, KindInfo{Kind: d.Kind, Plural: d.Plural, Singular: d.Singular(), ShortNames: d.ShortNames})
	}
	writeJSON(w, http.StatusOK, map[string]any{"apiVersion": config.APIVersion, "kinds": out})
}

func (s *Server) configDir(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, "GET")
		return
	}
	if s.opts.Dir == nil {
		writeError(w, http.StatusNotFound, "no config directory (serve --config DIR)", nil)
		return
	}
	problems := s.opts.Dir.Problems()
	if problems == nil {
		problems = []config.Problem{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"path": s.opts.Dir.Path(), "problems": problems})
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, def *config.KindDef) {
	sel, err := config.ParseSelector(r.URL.Query().Get("labelSelector"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	}
	if v := r.URL.Query().Get("watch"); v == "true" || v == "1" {
		s.watch(w, r, def, sel)
		return
	}
	items := s.store.List(def.Kind, sel)
	if items == nil {
		items = []*config.Object{}
	}
	writeJSON(w, http.StatusOK, List{APIVersion: config.APIVersion, Kind: def.Kind + "List", Items: items})
}

func (s *Server) get(w http.ResponseWriter, _ *http.Request, def *config.KindDef, name, sub string) {
	k := config.Key{Kind: def.Kind, Name: name}
	if sub == "events" {
		evs, ok := s.store.Events(k)
		if !ok {
			s.storeError(w, fmt.Errorf("%s %q %w", def.Kind, name, config.ErrNotFound))
			return
		}
		if evs == nil {
			evs = []config.Event{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"items": evs})
		return
	}
	obj, ok := s.store.Get(k)
	if !ok {
		s.storeError(w, fmt.Errorf("%s %q %w", def.Kind, name, config.ErrNotFound))
		return
	}
	if sub == "status" {
		st := obj.Status
		if st == nil {
			st = &config.Status{}
		}
		writeJSON(w, http.StatusOK, st)
		return
	}
	writeJSON(w, http.StatusOK, obj)
}

func (s *Server) apply(w http.ResponseWriter, r *http.Request, def *config.KindDef, name string, create bool) {
	if code, msg := checkContentType(r); code != 0 {
		writeError(w, code, msg, nil)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit), nil)
			return
		}
		writeError(w, http.StatusBadRequest, "reading request body: "+err.Error(), nil)
		return
	}
	obj, warns, err := s.kinds.DecodeWarn(body)
	var ve *config.ValidationError
	switch {
	case errors.As(err, &ve) && ve.Kind != "" && ve.Kind != def.Kind:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("kind %s does not belong under %s/%s", ve.Kind, Prefix, def.Plural), nil)
		return
	case ve != nil:
		writeError(w, http.StatusUnprocessableEntity, ve.Summary(), ve.Errs.Strings())
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, err.Error(), nil)
		return
	case obj.Kind != def.Kind:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("kind %s does not belong under %s/%s", obj.Kind, Prefix, def.Plural), nil)
		return
	case name != "" && obj.Metadata.Name != name:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("metadata.name %q does not match the URL's name %q", obj.Metadata.Name, name), nil)
		return
	}
	dry := r.URL.Query().Get("dryRun")
	res, out, err := s.store.Apply(obj, config.ApplyOptions{CreateOnly: create, DryRun: dry == "All" || dry == "true"})
	if err != nil {
		s.storeError(w, err)
		return
	}
	w.Header().Set(ResultHeader, string(res))
	for _, fe := range warns {
		// As the Kubernetes API does: warn code 299, shown by clients.
		w.Header().Add("Warning", `299 - `+strconv.Quote(fe.Error()))
	}
	code := http.StatusOK
	if res == config.Created {
		code = http.StatusCreated
		w.Header().Set("Location", Prefix+"/"+def.Plural+"/"+out.Metadata.Name)
	}
	writeJSON(w, code, out)
}

// checkContentType accepts JSON and YAML bodies. Requiring one also keeps
// browsers from sending a write without a CORS preflight, which this
// server never grants.
func checkContentType(r *http.Request) (int, string) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil {
		switch mt {
		case "application/json", "application/yaml", "application/x-yaml", "text/yaml", "application/apply-patch+yaml":
			return 0, ""
		}
	}
	return http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: send application/json or application/yaml", ct)
}

func (s *Server) delete(w http.ResponseWriter, def *config.KindDef, name string) {
	out, err := s.store.Delete(config.Key{Kind: def.Kind, Name: name}, "")
	if err != nil {
		s.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) storeError(w http.ResponseWriter, err error) {
	var ve *config.ValidationError
	switch {
	case errors.Is(err, config.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error(), nil)
	case errors.Is(err, config.ErrExists), errors.Is(err, config.ErrConflict):
		writeError(w, http.StatusConflict, err.Error(), nil)
	case errors.As(err, &ve):
		writeError(w, http.StatusUnprocessableEntity, ve.Summary(), ve.Errs.Strings())
	default:
		s.log.Error("API request failed", "err", err)
		writeError(w, http.StatusInternalServerError, err.Error(), nil)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code = http.StatusInternalServerError
		data, _ = json.Marshal(ErrorBody{Error: "encoding response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(data, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string, details []string) {
	writeJSON(w, code, ErrorBody{Error: msg, Details: details})
}
