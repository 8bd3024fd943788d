package e2e

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	mosquittoPkg = "mosquitto-clients (Debian)"
	procLimit    = 20 * time.Second
	lineWait     = 10 * time.Second
)

// mosquitto runs the mosquitto command line clients against one edgeport.
type mosquitto struct {
	t          *testing.T
	stdbuf     string
	sub, pub   string
	host, port string
}

func newMosquitto(t *testing.T, e *edgeport) *mosquitto {
	t.Helper()
	return &mosquitto{
		t:      t,
		stdbuf: requirePeer(t, "stdbuf", "coreutils"),
		sub:    requirePeer(t, "mosquitto_sub", mosquittoPkg),
		pub:    requirePeer(t, "mosquitto_pub", mosquittoPkg),
		host:   "127.0.0.1",
		port:   e.port(t, "mqtt"),
	}
}

// msgPrefix marks message lines in mosquitto_sub output, which -d mixes with
// its debug lines.
const msgPrefix = "MSG|"

// subscribe starts mosquitto_sub in debug mode with a parseable message
// format and returns once the broker acknowledged the subscription.
func (m *mosquitto) subscribe(args ...string) *proc {
	m.t.Helper()
	return m.subscribeFor(procLimit, args...)
}

// subscribeFor is subscribe for a subscriber that runs at most limit.
func (m *mosquitto) subscribeFor(limit time.Duration, args ...string) *proc {
	m.t.Helper()
	// mosquitto_sub flushes stdout after messages but not after debug
	// lines, so a pipe would hold back the SUBACK line without stdbuf.
	all := append([]string{"-oL", m.sub, "-h", m.host, "-p", m.port, "-d", "-F", msgPrefix + "%t|%q|%r|%P|%p"}, args...)
	p := startProc(m.t, limit, "", m.stdbuf, all...)
	p.name = "mosquitto_sub"
	p.waitLine(m.t, lineWait, "SUBACK", func(l string) bool { return strings.Contains(l, "received SUBACK") })
	return p
}

func (m *mosquitto) publish(args ...string) {
	m.t.Helper()
	runProc(m.t, procLimit, "", m.pub, append([]string{"-h", m.host, "-p", m.port}, args...)...)
}

// messages returns the message lines of mosquitto_sub output without the prefix.
func messages(out []string) []string {
	var msgs []string
	for _, l := range out {
		if s, ok := strings.CutPrefix(l, msgPrefix); ok {
			msgs = append(msgs, s)
		}
	}
	return msgs
}

func TestMosquittoClients(t *testing.T) {
	t.Parallel()
	e := startEdgeport(t)
	m0 := newMosquitto(t, e)

	t.Run("qos round trip", func(t *testing.T) {
		for _, v := range []string{"mqttv5", "mqttv311"} {
			t.Run(v, func(t *testing.T) {
				t.Parallel()
				m := *m0
				m.t = t
				topic := "mosq/rt/" + v
				sub := m.subscribe("-V", v, "-q", "2", "-t", topic+"/#", "-C", "3")
				var want []string
				for q := range 3 {
					payload := fmt.Sprintf("%s-qos%d", v, q)
					m.publish("-V", v, "-q", fmt.Sprint(q), "-t", fmt.Sprintf("%s/%d", topic, q), "-m", payload)
					want = append(want, fmt.Sprintf("%s/%d|%d|0||%s", topic, q, q, payload))
				}
				if got := messages(sub.wait(t, lineWait)); !slices.Equal(got, want) {
					t.Fatalf("received\n%q\nwant\n%q", got, want)
				}
			})
		}
	})

	t.Run("persistent session", func(t *testing.T) {
		for _, v := range []string{"mqttv5", "mqttv311"} {
			t.Run(v, func(t *testing.T) {
				t.Parallel()
				m := *m0
				m.t = t
				topic := "mosq/session/" + v
				// -c keeps the session (MQTT 5: expiry never); -E leaves
				// once the subscription is acknowledged.
				session := []string{"-h", m.host, "-p", m.port, "-V", v, "-c", "-i", "mosq-session-" + v, "-q", "1", "-t", topic}
				runProc(t, procLimit, "", m.sub, append(session, "-E")...)
				m.publish("-V", v, "-q", "1", "-t", topic, "-m", "while-away-1")
				m.publish("-V", v, "-q", "1", "-t", topic, "-m", "while-away-2")
				out := runProc(t, procLimit, "", m.sub, append(session, "-C", "2", "-F", msgPrefix+"%t|%q|%p")...)
				want := []string{topic + "|1|while-away-1", topic + "|1|while-away-2"}
				if got := messages(out); !slices.Equal(got, want) {
					t.Fatalf("resumed session got %q, want %q", got, want)
				}
			})
		}
	})

	t.Run("retained for late subscriber", func(t *testing.T) {
		t.Parallel()
		m := *m0
		m.t = t
		m.publish("-q", "1", "-r", "-t", "mosq/retained", "-m", "kept")
		// No -d here: the message may arrive before any output could be
		// waited for, and -C 1 ends the program once it has.
		out := runProc(t, procLimit, "", m.sub, "-h", m.host, "-p", m.port, "-t", "mosq/retained", "-C", "1", "-F", msgPrefix+"%t|%q|%r|%p")
		if got, want := messages(out), []string{"mosq/retained|0|1|kept"}; !slices.Equal(got, want) {
			t.Fatalf("late subscriber got %q, want %q", got, want)
		}
	})

	t.Run("will on SIGKILL", func(t *testing.T) {
		t.Parallel()
		m := *m0
		m.t = t
		watcher := m.subscribe("-V", "mqttv5", "-q", "1", "-t", "mosq/will/#", "-C", "1")
		doomed := m.subscribe("-V", "mqttv5", "-t", "mosq/will-owner/idle",
			"--will-topic", "mosq/will/gone", "--will-payload", "client vanished", "--will-qos", "1")
		if err := doomed.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("killing mosquitto_sub: %v", err)
		}
		want := []string{"mosq/will/gone|1|0||client vanished"}
		if got := messages(watcher.wait(t, lineWait)); !slices.Equal(got, want) {
			t.Fatalf("will watcher got %q, want %q", got, want)
		}
	})

	t.Run("v5 user properties", func(t *testing.T) {
		t.Parallel()
		m := *m0
		m.t = t
		sub := m.subscribe("-V", "mqttv5", "-q", "1", "-t", "mosq/props", "-C", "1")
		m.publish("-V", "mqttv5", "-q", "1", "-t", "mosq/props", "-m", "with props",
			"-D", "publish", "user-property", "site", "berlin",
			"-D", "publish", "user-property", "line", "4 b")
		want := []string{"mosq/props|1|0|site:berlin line:4 b|with props"}
		if got := messages(sub.wait(t, lineWait)); !slices.Equal(got, want) {
			t.Fatalf("got %q, want %q", got, want)
		}
	})
}

func TestMosquittoSys(t *testing.T) {
	t.Parallel()
	e := startEdgeport(t, "--sys-interval", "1s")
	m := newMosquitto(t, e)

	all := m.subscribe("-t", "#", "-C", "1")
	// -R ignores the retained $SYS values sent on subscribe, so this ends
	// only after a periodic publish, which "#" would have seen by then.
	uptime := m.subscribe("-t", "$SYS/broker/uptime", "-R", "-C", "1")
	got := messages(uptime.wait(t, lineWait))
	if len(got) != 1 || !strings.HasPrefix(got[0], "$SYS/broker/uptime|0|0||") || !strings.HasSuffix(got[0], " seconds") {
		t.Fatalf("$SYS/broker/uptime subscriber got %q", got)
	}
	m.publish("-t", "sys/marker", "-m", "after-sys")
	if got, want := messages(all.wait(t, lineWait)), []string{"sys/marker|0|0||after-sys"}; !slices.Equal(got, want) {
		t.Fatalf(`"#" subscriber got %q first, want %q ($SYS must not match "#")`, got, want)
	}
}
