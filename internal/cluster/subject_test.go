package cluster

import (
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/edgeport/edgeport/internal/mqtt/topic"
)

func TestSubject(t *testing.T) {
	for _, c := range []struct{ topic, subject string }{
		{"a/b", "mqtt.a.b"},
		{"$SYS/x", "mqtt$.$SYS.x"},
		{"a//b", "mqtt.a.%.b"},
		{"/a/", "mqtt.%.a.%"},
		{"/", "mqtt.%.%"},
		{"v1.2/x y", "mqtt.v1%2E2.x%20y"},
		{"*/>/%", "mqtt.%2A.%3E.%25"},
		{"tab\there", "mqtt.tab%09here"},
		{"ünï/çødé", "mqtt.ünï.çødé"},
	} {
		if got := Subject(c.topic); got != c.subject {
			t.Errorf("Subject(%q) = %q, want %q", c.topic, got, c.subject)
		}
		if got, err := Topic(c.subject); err != nil || got != c.topic {
			t.Errorf("Topic(%q) = %q, %v, want %q", c.subject, got, err, c.topic)
		}
	}
	for _, bad := range []string{"foo.bar", "mqtt", "mqtt.", "mqtt.a..b", "mqtt.*", "mqtt.a.>", "mqtt.%4", "mqtt.%41", "mqtt.%zz", "mqtt.a b", "mqtt$.a", "mqtt.$a", "mqtt.a/b"} {
		if got, err := Topic(bad); err == nil {
			t.Errorf("Topic(%q) = %q, want an error", bad, got)
		}
	}
}

func TestFilterSubjects(t *testing.T) {
	for _, c := range []struct {
		filter string
		want   []string
	}{
		{"#", []string{"mqtt.>"}},
		{"+", []string{"mqtt.*"}},
		{"a/#", []string{"mqtt.a.>", "mqtt.a"}},
		{"+/b/#", []string{"mqtt.*.b.>", "mqtt.*.b"}},
		{"$SYS/#", []string{"mqtt$.$SYS.>", "mqtt$.$SYS"}},
		{"a/+/c", []string{"mqtt.a.*.c"}},
		{"/+", []string{"mqtt.%.*"}},
		{"a.b/*", []string{"mqtt.a%2Eb.%2A"}},
	} {
		if got := FilterSubjects(c.filter); !slices.Equal(got, c.want) {
			t.Errorf("FilterSubjects(%q) = %q, want %q", c.filter, got, c.want)
		}
	}
}

// FuzzTopicRoundTrip: every valid topic maps to a valid NATS subject
// without wildcards, and back to itself.
func FuzzTopicRoundTrip(f *testing.F) {
	for _, s := range []string{"a/b", "$SYS/x", "/", "a//b", "v1.2/x y", "*/>/%", "%41", "\x7f/\x01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if topic.ValidName(name) != nil {
			return
		}
		subj := Subject(name)
		if !server.IsValidLiteralSubject(subj) {
			t.Fatalf("Subject(%q) = %q: not a valid literal NATS subject", name, subj)
		}
		back, err := Topic(subj)
		if err != nil || back != name {
			t.Fatalf("Topic(Subject(%q)) = %q, %v", name, back, err)
		}
	})
}

// FuzzFilterMatchAgrees: a topic matches an MQTT filter exactly when its
// subject matches one of the filter's subjects, by nats-server's matcher.
func FuzzFilterMatchAgrees(f *testing.F) {
	for _, s := range [][2]string{
		{"#", "a"}, {"#", "$SYS/a"}, {"a/#", "a"}, {"a/#", "a/b/c"}, {"+", "/"}, {"+/+", "/"},
		{"/#", "/"}, {"+/#", "$x"}, {"$SYS/#", "$SYS"}, {"a/+/c", "a//c"}, {"a.b/*", "a.b/*"},
		{"a/%", "a/%"}, {"+/b", "a b/b"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, filter, name string) {
		if topic.ValidFilter(filter) != nil || topic.ValidName(name) != nil || strings.HasPrefix(filter, "$share/") {
			return
		}
		want := topic.Match(filter, name)
		subj := Subject(name)
		got := false
		for _, fs := range FilterSubjects(filter) {
			if !server.IsValidSubject(fs) {
				t.Fatalf("FilterSubjects(%q) has invalid subject %q", filter, fs)
			}
			if server.SubjectMatchesFilter(subj, fs) {
				got = true
			}
		}
		if got != want {
			t.Fatalf("filter %q, topic %q: MQTT match %v, NATS match %v (subjects %q, %q)", filter, name, want, got, FilterSubjects(filter), subj)
		}
	})
}

func TestQueueNameRoundTrip(t *testing.T) {
	for _, c := range [][2]string{{"g", "s/#"}, {"a b", "x.y/+/z"}, {"%", "/"}, {"g", "$SYS/#"}} {
		q := QueueName(c[0], c[1])
		if strings.ContainsAny(q, " \t\r\n") {
			t.Errorf("QueueName(%q, %q) = %q has whitespace", c[0], c[1], q)
		}
		g, f, ok := parseQueueName(q)
		if !ok || g != c[0] || f != c[1] {
			t.Errorf("parseQueueName(%q) = %q, %q, %v", q, g, f, ok)
		}
	}
}
