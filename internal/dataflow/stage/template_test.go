package stage

import (
	"errors"
	"testing"
)

func TestTemplate(t *testing.T) {
	for _, c := range []struct {
		tpl, topic, want, err string
	}{
		{"fixed/topic", "a/b", "fixed/topic", ""},
		{"${inputTopic}", "plant/line1/temp", "plant/line1/temp", ""},
		{"out/${inputTopic.2}/${inputTopic.3}", "plant/line1/temp", "out/line1/temp", ""},
		{"plant-${inputTopic.1}", "plant/x", "plant-plant", ""},
		{"x/${inputTopic.4}", "a/b", "", `${inputTopic.4}: topic "a/b" has 2 levels`},
	} {
		tp, err := ParseTemplate(c.tpl)
		if err != nil {
			t.Fatalf("%s: %v", c.tpl, err)
		}
		got, err := tp.Expand(c.topic)
		if c.err != "" {
			if err == nil || err.Error() != c.err || !errors.Is(err, ErrPermanent) {
				t.Errorf("%s on %s: err %v, want permanent %q", c.tpl, c.topic, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s on %s = %q, %v; want %q", c.tpl, c.topic, got, err, c.want)
		}
	}
	for _, bad := range []string{"${inputTopic", "${inputTopic.0}", "${foo}"} {
		if _, err := ParseTemplate(bad); err == nil {
			t.Errorf("%s parsed", bad)
		}
	}
}

func FuzzTemplate(f *testing.F) {
	f.Add("out/${inputTopic.2}", "a/b/c")
	f.Add("${inputTopic}", "")
	f.Fuzz(func(t *testing.T, tpl, topic string) {
		tp, err := ParseTemplate(tpl)
		if err != nil {
			return
		}
		_, _ = tp.Expand(topic)
	})
}
