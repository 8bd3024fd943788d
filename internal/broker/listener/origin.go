package listener

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// AnyOrigin in Config.AllowedOrigins lets pages of every origin use the
// listener: only for brokers whose authentication alone guards them.
const AnyOrigin = "*"

// originAllowed decides whether a WebSocket upgrade may proceed. Browsers
// send Origin with every WebSocket handshake and scripts cannot forge it;
// programs (devices, libraries) usually send none and are judged by MQTT
// authentication alone. A browser's request is allowed when its origin is
// listed in allowed, or is on the host the request is addressed to and
// that host is an IP address or localhost. A DNS name is not trusted as
// "same host": a page can rebind its own name to the broker's address, and
// its requests then carry a matching Origin and Host.
//
// Without this check any web page a user visits could open a connection
// to a broker the user's browser can reach, such as one on 127.0.0.1,
// connect anonymously and subscribe to everything (cross-site WebSocket
// hijacking).
func originAllowed(r *http.Request, allowed []string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	norm, ok := normalizeOrigin(origin)
	if !ok {
		return false // "null" (sandboxed frames, files) and garbage
	}
	for _, a := range allowed {
		if a == AnyOrigin || a == norm {
			return true
		}
	}
	u, _ := url.Parse(norm)
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	return u.Hostname() == host && (host == "localhost" || net.ParseIP(host) != nil)
}

// normalizeOrigin reduces an origin to lower-case scheme://host[:port],
// which is how browsers send it; ok is false unless it is an http(s) origin.
func normalizeOrigin(s string) (string, bool) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), true
}

// CheckOrigins validates Config.AllowedOrigins entries: AnyOrigin or
// http(s)://host[:port]. It returns the normalized list.
func CheckOrigins(origins []string) ([]string, error) {
	out := make([]string, 0, len(origins))
	for i, o := range origins {
		if o == AnyOrigin {
			out = append(out, o)
			continue
		}
		n, ok := normalizeOrigin(o)
		if !ok {
			return nil, fmt.Errorf("allowed origin [%d] %q: want %q or scheme://host[:port] with scheme http or https", i, o, AnyOrigin)
		}
		out = append(out, n)
	}
	return out, nil
}
