package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const mqttJSInstalls = "MQTT.js (npm mqtt 5.16.0 into test/e2e/node/node_modules)"

// nodeDir is where the MQTT.js scripts run, so that require('mqtt')
// resolves to the pinned package.
func nodeDir(t *testing.T) string {
	t.Helper()
	requirePeer(t, "node", "Node.js")
	dir, err := filepath.Abs("node")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "mqtt", "package.json")); err != nil {
		t.Fatalf("MQTT.js missing (%v): run ./scripts/test.sh, which installs %s", err, mqttJSInstalls)
	}
	return dir
}

type jsMessage struct {
	Topic           string         `json:"topic"`
	QoS             int            `json:"qos"`
	Retain          bool           `json:"retain"`
	Length          int            `json:"length"`
	SHA256          string         `json:"sha256"`
	Payload         string         `json:"payload,omitempty"`
	UserProperties  map[string]any `json:"userProperties,omitempty"`
	CorrelationData string         `json:"correlationData,omitempty"`
}

type jsResult struct {
	Granted   []int       `json:"granted"`
	Received  []jsMessage `json:"received"`
	AliasedIn int         `json:"aliasedIn"`
	BigSHA256 string      `json:"bigSha256,omitempty"`
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// bigPayload is the payload roundtrip.js builds for a bigSize.
func bigPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((i*31 + 7) % 251)
	}
	return b
}

func TestMQTTJS(t *testing.T) {
	t.Parallel()
	dir := nodeDir(t)
	e := startEdgeport(t)
	const count = 30
	// 200 KB crosses many WebSocket frames and TCP segments in both directions.
	const bigSize = 200 << 10
	for _, tc := range []struct {
		name      string
		transport string
		version   int
		bigSize   int
		aliases   bool
	}{
		{"ws/v5", "ws", 5, bigSize, false},
		{"ws/v311", "ws", 4, bigSize, false},
		{"tcp/v5", "mqtt", 5, 0, false},
		{"tcp/v311", "mqtt", 4, 0, false},
		{"tcp/v5/topic-aliases", "mqtt", 5, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := "mqtt://" + e.addr(t, "mqtt")
			if tc.transport == "ws" {
				url = "ws://" + e.addr(t, "ws") + "/mqtt"
			}
			prefix := fmt.Sprintf("js-%s-%d-%t", tc.transport, tc.version, tc.aliases)
			cfg, err := json.Marshal(map[string]any{
				"url": url, "protocolVersion": tc.version, "prefix": prefix, "count": count, "bigSize": tc.bigSize,
				"aliases": tc.aliases,
			})
			if err != nil {
				t.Fatal(err)
			}
			out := runProc(t, 30*time.Second, dir, "node", "roundtrip.js", string(cfg))
			if len(out) != 1 {
				t.Fatalf("want one JSON line, got %d lines", len(out))
			}
			var got jsResult
			if err := json.Unmarshal([]byte(out[0]), &got); err != nil {
				t.Fatalf("decoding %q: %v", out[0], err)
			}
			want := jsResult{Granted: []int{2}}
			levels := 3
			if tc.aliases {
				levels = 2 // see roundtrip.js
				// Every topic's first delivery sets its alias, the rest use it.
				want.AliasedIn = count
			}
			for i := range count {
				payload := fmt.Sprintf("msg-%d", i)
				m := jsMessage{
					Topic: fmt.Sprintf("%s/live/%d", prefix, i%levels), QoS: i % levels,
					Length: len(payload), SHA256: sha256Hex([]byte(payload)), Payload: payload,
				}
				if tc.version == 5 {
					m.UserProperties = map[string]any{"seq": fmt.Sprint(i), "tags": []any{"a", "b"}}
					m.CorrelationData = fmt.Sprintf("corr-%d", i)
				}
				want.Received = append(want.Received, m)
			}
			if tc.bigSize > 0 {
				sum := sha256Hex(bigPayload(tc.bigSize))
				want.BigSHA256 = sum
				want.Received = append(want.Received, jsMessage{Topic: prefix + "/big", QoS: 1, Length: tc.bigSize, SHA256: sum})
			}
			// Per-topic order, as in TestPahoPython: MQTT.js too emits a
			// QoS 2 message at PUBREL.
			byTopic := func(a, b jsMessage) int { return strings.Compare(a.Topic, b.Topic) }
			slices.SortStableFunc(got.Received, byTopic)
			slices.SortStableFunc(want.Received, byTopic)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("MQTT.js %s saw\n%+v\nwant\n%+v", tc.name, got, want)
			}
		})
	}
}

// TestMQTTJSConformance runs the scenarios of node/conformance.js with
// MQTT.js against one Edgeport, each as a subtest: a resumed MQTT 5 session
// with subscription identifiers and retain handling, wills with
// properties, request/response, and the MQTT 3.1.1 and 3.1 protocol levels.
// Each scenario asserts itself (citing the specification) and prints PASS.
func TestMQTTJSConformance(t *testing.T) {
	t.Parallel()
	dir := nodeDir(t)
	e := startEdgeport(t)
	url := "mqtt://" + e.addr(t, "mqtt")
	names := runProc(t, 30*time.Second, dir, "node", "conformance.js", "list")
	if len(names) < 5 {
		t.Fatalf("only %d scenarios listed: %q", len(names), names)
	}
	for i, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out := runProc(t, 60*time.Second, dir, "node", "conformance.js", url, name, fmt.Sprintf("js%d", i))
			if len(out) == 0 || out[len(out)-1] != "PASS "+name {
				t.Fatalf("scenario %s did not pass:\n%s", name, strings.Join(out, "\n"))
			}
		})
	}
}
