package cluster

import "testing"

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
