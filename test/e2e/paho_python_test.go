package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// debianPython is the interpreter Debian's python3-paho-mqtt is installed for.
const debianPython = "/usr/bin/python3"

func requirePahoPython(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(debianPython); err != nil {
		t.Fatalf("%s: %v: run ./scripts/test.sh, which installs python3-paho-mqtt", debianPython, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, debianPython, "-c", "import paho.mqtt; print(paho.mqtt.__version__)").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import paho.mqtt (%v: %s): run ./scripts/test.sh, which installs python3-paho-mqtt", debianPython, err, out)
	}
}

type pahoMessage struct {
	Topic   string     `json:"topic"`
	Payload string     `json:"payload"`
	QoS     int        `json:"qos"`
	Retain  bool       `json:"retain"`
	User    [][]string `json:"user,omitempty"`
}

type pahoResult struct {
	Published int           `json:"published"`
	Connack   []int         `json:"connack"`
	Granted   []int         `json:"granted"`
	Received  []pahoMessage `json:"received"`
	Retained  []pahoMessage `json:"retained"`
}

func TestPahoPython(t *testing.T) {
	t.Parallel()
	requirePahoPython(t)
	e := startEdgeport(t)
	script, err := filepath.Abs("python/paho_roundtrip.py")
	if err != nil {
		t.Fatal(err)
	}
	const count = 30
	for _, version := range []string{"5", "311"} {
		t.Run("mqtt"+version, func(t *testing.T) {
			t.Parallel()
			prefix := "py" + version
			out := runProc(t, 30*time.Second, "", debianPython, script, "127.0.0.1", e.port(t, "mqtt"), version, prefix, fmt.Sprint(count))
			if len(out) != 1 {
				t.Fatalf("want one JSON line, got %q", out)
			}
			var got pahoResult
			if err := json.Unmarshal([]byte(out[0]), &got); err != nil {
				t.Fatalf("decoding %q: %v", out[0], err)
			}
			want := pahoResult{Published: count, Connack: []int{0, 0, 0}, Granted: []int{2}}
			for i := range count {
				m := pahoMessage{Topic: fmt.Sprintf("%s/live/%d", prefix, i%3), Payload: fmt.Sprintf("msg-%d", i), QoS: i % 3}
				if version == "5" {
					m.User = [][]string{{"seq", fmt.Sprint(i)}}
				}
				want.Received = append(want.Received, m)
			}
			want.Retained = []pahoMessage{{Topic: prefix + "/kept", Payload: "retained-payload", QoS: 1, Retain: true}}
			// MQTT orders messages per topic, and Paho hands a QoS 2 message
			// to the application only at PUBREL, after the QoS 0 and 1 ones
			// that followed it: compare each topic's sequence.
			byTopic := func(a, b pahoMessage) int { return strings.Compare(a.Topic, b.Topic) }
			slices.SortStableFunc(got.Received, byTopic)
			slices.SortStableFunc(want.Received, byTopic)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("paho %s saw\n%+v\nwant\n%+v", version, got, want)
			}
		})
	}
}
