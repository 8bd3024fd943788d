package cluster

import (
	"net/url"
	"strings"
	"testing"
)

func TestNATSNeedsTLS(t *testing.T) {
	for url, want := range map[string]bool{
		"nats://127.0.0.1:4222":                      false,
		"nats://localhost:4222,nats://[::1]:4222":    false,
		"127.0.0.1:4222":                             false,
		"nats://nats.example:4222":                   true,
		"nats://127.0.0.1:4222,nats://10.0.0.2:4222": true,
		"tls://nats.example:4222":                    true,
		"nats://0.0.0.0:4222":                        true,
	} {
		if got := natsNeedsTLS(url); got != want {
			t.Errorf("natsNeedsTLS(%q) = %v, want %v", url, got, want)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://u:pw@h:4222,nats://tok@h2:4222": "nats://u:xxxxx@h:4222,nats://xxxxx@h2:4222",
		"nats://h:4222":                         "nats://h:4222",
		"nats://u:pw@h:4222/%zz":                "(unparsable URL)",
	} {
		if got := redactURLs(in); got != want {
			t.Errorf("redactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzRedactURLs: whatever the user name and password (or token), the
// redacted URL is the URL with the password (or token) replaced, so it
// never survives.
func FuzzRedactURLs(f *testing.F) {
	f.Add("edge", "s3cret", true)
	f.Add("", "p@ss:word/%", true)
	f.Add("tok-en", "", false)
	f.Fuzz(func(t *testing.T, user, pass string, withPassword bool) {
		if strings.Contains(user+pass, ",") {
			// Splits the URL list (as nats.go splits it): Validate
			// refuses the piece after the comma (TestRouteSecurityValidate).
			return
		}
		u := url.URL{Scheme: "nats", Host: "nats.example:4222"}
		want := u
		if withPassword {
			u.User, want.User = url.UserPassword(user, pass), url.UserPassword(user, "xxxxx")
		} else {
			u.User, want.User = url.User(user), url.User("xxxxx")
		}
		if got := redactURLs(u.String()); got != want.String() {
			t.Fatalf("redactURLs(%q) = %q, want %q", u.String(), got, want.String())
		}
	})
}
