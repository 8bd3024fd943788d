package opcua

import (
	"context"

	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/edgeport/edgeport/internal/config"
)

// APIPath is where the OPC UA connector's HTTP API is mounted, beside the
// resource API.
const APIPath = "/api/v1/connectors/opcua/"

// Sessions finds the running session of a device endpoint.
type Sessions interface {
	Session(device, endpoint string) (*Session, error)
}

// API serves the trust list, browse and discovery over HTTP:
//
//	GET    certs                     the trust list (trusted, issuers, rejected)
//	POST   certs[?issuer=true]       add a certificate or CRL (DER or PEM body)
//	POST   certs/{thumbprint}/trust  move a rejected certificate to trusted
//	POST   certs/{thumbprint}/reject move a trusted certificate to rejected
//	DELETE certs/{thumbprint}        delete it from its list
//	GET    certs/own                 Edgeport's application certificate
//	GET    browse/{device}[/{endpoint}]?node=&depth=  the address space as a tree
//	GET    discover?url=             FindServers on a discovery URL
//	POST   discover                  FindServers on URLs and a host/port range (DiscoverRequest);
//	                                 each server found becomes a DiscoveredDevice
type API struct {
	Trust    *TrustList
	App      *AppCert
	Sessions Sessions // nil: browse answers 503
	// Store records discovered devices (POST discover); nil: 503.
	Store *config.Store
}

// TreeNode is a browsed node with its children.
type TreeNode struct {
	Node
	Children []*TreeNode `json:"children,omitempty"`
}

// OwnCert is the answer of GET certs/own.
type OwnCert struct {
	Thumbprint     string    `json:"thumbprint"`
	Subject        string    `json:"subject"`
	ApplicationURI string    `json:"applicationUri"`
	NotAfter       time.Time `json:"notAfter"`
	PEM            string    `json:"pem"`
}

// maxBrowseNodes bounds one browse answer.
const maxBrowseNodes = 5000

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest := strings.Trim(strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(APIPath, "/")), "/")
	parts := strings.Split(rest, "/")
	switch {
	case parts[0] == "certs":
		a.certs(w, r, parts[1:])
	case parts[0] == "browse" && len(parts) >= 2 && r.Method == http.MethodGet:
		endpoint := ""
		if len(parts) > 2 {
			endpoint = parts[2]
		}
		a.browse(w, r, parts[1], endpoint)
	case parts[0] == "discover" && len(parts) == 1 && r.Method == http.MethodPost:
		a.discover(w, r)
	case parts[0] == "discover" && len(parts) == 1 && r.Method == http.MethodGet:
		servers, err := FindServers(r.Context(), r.URL.Query().Get("url"), 5*time.Second)
		if err != nil {
			writeErr(w, http.StatusBadGateway, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"items": servers})
	default:
		writeErr(w, http.StatusNotFound, fmt.Errorf("no such OPC UA connector endpoint: %s %s", r.Method, r.URL.Path))
	}
}

func (a *API) discover(w http.ResponseWriter, r *http.Request) {
	if a.Store == nil {
		writeErr(w, http.StatusServiceUnavailable, errors.New("no registry to record discovered devices in"))
		return
	}
	var req DiscoverRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("discover request: %w", err))
		return
	}
	urls := append([]string(nil), req.URLs...)
	for _, u := range urls {
		if !strings.HasPrefix(u, "opc.tcp://") {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("urls: %q is not an opc.tcp:// URL", u))
			return
		}
	}
	if req.Range != "" {
		more, err := ExpandRange(req.Range)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		urls = append(urls, more...)
	}
	if len(urls) == 0 {
		writeErr(w, http.StatusBadRequest, errors.New("give urls or a range"))
		return
	}
	timeout := 2 * time.Second
	if req.TimeoutMillis > 0 {
		timeout = time.Duration(req.TimeoutMillis) * time.Millisecond
	}
	res, err := Discover(r.Context(), a.Store, urls, timeout)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	if res == nil {
		res = []DiscoverResult{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": res, "scanned": len(urls)})
}

func (a *API) certs(w http.ResponseWriter, r *http.Request, parts []string) {
	switch {
	case len(parts) == 0 && r.Method == http.MethodGet:
		list, err := a.Trust.List()
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		if list == nil {
			list = []CertEntry{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"items": list})
	case len(parts) == 0 && r.Method == http.MethodPost:
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		e, err := a.Trust.Add(body, r.URL.Query().Get("issuer") == "true")
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, http.StatusOK, e)
	case len(parts) == 1 && parts[0] == "own" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, OwnCert{
			Thumbprint: a.App.Thumbprint(), Subject: a.App.Cert.Subject.String(), ApplicationURI: a.App.URI,
			NotAfter: a.App.Cert.NotAfter.UTC(),
			PEM:      string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.App.DER})),
		})
	case len(parts) == 1 && r.Method == http.MethodDelete:
		a.certResult(w, a.Trust.Remove, parts[0])
	case len(parts) == 2 && parts[1] == "trust" && r.Method == http.MethodPost:
		a.certResult(w, a.Trust.Trust, parts[0])
	case len(parts) == 2 && parts[1] == "reject" && r.Method == http.MethodPost:
		a.certResult(w, a.Trust.Reject, parts[0])
	default:
		writeErr(w, http.StatusNotFound, fmt.Errorf("no such certs endpoint: %s %s", r.Method, r.URL.Path))
	}
}

func (a *API) certResult(w http.ResponseWriter, f func(string) (CertEntry, error), thumb string) {
	e, err := f(thumb)
	switch {
	case errors.Is(err, ErrCertUnknown):
		writeErr(w, http.StatusNotFound, err)
	case errors.Is(err, ErrAmbiguous):
		writeErr(w, http.StatusConflict, err)
	case err != nil:
		writeErr(w, http.StatusInternalServerError, err)
	default:
		writeJSON(w, http.StatusOK, e)
	}
}

func (a *API) browse(w http.ResponseWriter, r *http.Request, device, endpoint string) {
	if a.Sessions == nil {
		writeErr(w, http.StatusServiceUnavailable, errors.New("the OPC UA connector is not running"))
		return
	}
	s, err := a.Sessions.Session(device, endpoint)
	if err != nil {
		writeErr(w, http.StatusNotFound, err)
		return
	}
	depth := 1
	if d := r.URL.Query().Get("depth"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil || n < 1 || n > 10 {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("depth: %q is not a number from 1 to 10", d))
			return
		}
		depth = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	budget := maxBrowseNodes
	tree, err := browseTree(ctx, s, r.URL.Query().Get("node"), depth, &budget)
	if errors.Is(err, ErrNotConnected) {
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("device %s: %w", device, err))
		return
	}
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": tree, "truncated": budget <= 0})
}

func browseTree(ctx context.Context, s *Session, node string, depth int, budget *int) ([]*TreeNode, error) {
	nodes, err := s.Browse(ctx, node)
	if err != nil {
		return nil, err
	}
	out := make([]*TreeNode, 0, len(nodes))
	for _, n := range nodes {
		if *budget <= 0 {
			break
		}
		*budget--
		tn := &TreeNode{Node: n}
		if depth > 1 && (n.NodeClass == "Object" || n.NodeClass == "Variable") {
			kids, err := browseTree(ctx, s, n.NodeID, depth-1, budget)
			if err != nil {
				return nil, err
			}
			tn.Children = kids
		}
		out = append(out, tn)
	}
	return out, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// writeErr answers in the resource API's error shape ({"error": "..."}).
func writeErr(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
