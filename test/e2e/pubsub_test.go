package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// edgeport pub and edgeport sub interoperate with mosquitto_sub and
// mosquitto_pub through edgeport serve: QoS 1 and 2, MQTT 5 and 3.1.1,
// TCP by URL and by host/port, WebSocket, JSON pretty-printing, -o json
// with user properties, --count, and a refusal reported with its reason.
func TestPubSubInterop(t *testing.T) {
	e := startEdgeport(t)
	m := newMosquitto(t, e)
	url := "mqtt://" + e.addr(t, "mqtt")

	// edgeport pub → mosquitto_sub.
	s := m.subscribe("-t", "interop/a", "-V", "mqttv5", "-q", "2", "-C", "2")
	runProc(t, procLimit, "", edgeportBin, "pub", "-L", url, "-t", "interop/a", "-q", "1", "-m", "hello",
		"--user-property", "k=v")
	runProc(t, procLimit, "", edgeportBin, "pub", "--host", "127.0.0.1", "-p", m.port, "-t", "interop/a", "-q", "2",
		"-m", "second", "-V", "311")
	msgs := messages(s.wait(t, lineWait))
	// %t|%q|%r|%P|%p: topic, QoS, retain, properties, payload.
	if len(msgs) != 2 || !strings.HasPrefix(msgs[0], "interop/a|1|0|") || !strings.HasSuffix(msgs[0], "|hello") ||
		!strings.Contains(msgs[0], "k") || !strings.HasPrefix(msgs[1], "interop/a|2|0|") || !strings.HasSuffix(msgs[1], "|second") {
		t.Fatalf("mosquitto_sub got %q", msgs)
	}

	// mosquitto_pub → edgeport sub: a retained message first (it proves
	// the subscription is in place), then a live one; --count 2 ends it.
	m.publish("-t", "interop/b", "-r", "-q", "1", "-m", `{"n":1}`)
	p := startProc(t, procLimit, "", edgeportBin, "sub", "-L", url, "-t", "interop/b", "-C", "2", "-v", "--pretty", "-q", "1")
	p.waitLine(t, lineWait, "the retained message", func(l string) bool { return l == "interop/b {" })
	m.publish("-t", "interop/b", "-q", "1", "-m", "live")
	if got, want := p.wait(t, lineWait), []string{"interop/b {", `  "n": 1`, "}", "interop/b live"}; !slices.Equal(got, want) {
		t.Fatalf("edgeport sub printed %q, want %q", got, want)
	}

	// Over WebSocket, one JSON object per message with its properties.
	m.publish("-t", "interop/ws", "-r", "-m", "w", "-V", "mqttv5", "-D", "publish", "user-property", "a", "b")
	out := runProc(t, procLimit, "", edgeportBin, "sub", "-L", "ws://"+e.addr(t, "ws")+"/mqtt", "-t", "interop/ws", "-C", "1", "-o", "json")
	var rec struct {
		Topic          string      `json:"topic"`
		Payload        string      `json:"payload"`
		Retain         bool        `json:"retain"`
		UserProperties [][2]string `json:"userProperties"`
	}
	if len(out) != 1 || json.Unmarshal([]byte(out[0]), &rec) != nil || rec.Topic != "interop/ws" || rec.Payload != "w" ||
		!rec.Retain || len(rec.UserProperties) != 1 || rec.UserProperties[0] != [2]string{"a", "b"} {
		t.Fatalf("edgeport sub -o json printed %q", out)
	}

	// A refused publish exits 1 and names the reason.
	msg, code := runEdgeport(t, "pub", "-L", url, "-t", "$SYS/forbidden", "-q", "1", "-m", "x")
	if code != 1 || !strings.Contains(msg, "topic name invalid") {
		t.Fatalf("refused publish: exit %d, %q", code, msg)
	}
	// Bad flags are refused before connecting.
	if msg, code := runEdgeport(t, "sub", "-L", "http://x", "-t", "a"); code != 1 || !strings.Contains(msg, "scheme") {
		t.Fatalf("bad URL: exit %d, %q", code, msg)
	}
}
