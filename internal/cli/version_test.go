package cli

import (
	"runtime/debug"
	"testing"
)

func TestVersionOf(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "51e4aaa9b1103ab4919b96deb535e5e10a9e1466"
	for _, tc := range []struct {
		name   string
		ldflag string
		bi     *debug.BuildInfo
		want   string
	}{
		{"link-time version wins", "v1.2.3", &debug.BuildInfo{Main: debug.Module{Version: "v0.9.0"}}, "v1.2.3"},
		{"go install module@version", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, "v1.4.0"},
		{"go build in a checkout (Go 1.24+)", "", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261206033412-51e4aaa9b110+dirty"}, Settings: vcs(rev, "true")},
			"v0.0.0-20261206033412-51e4aaa9b110+dirty"},
		{"revision only", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "false")}, "51e4aaa9b110"},
		{"revision of a modified tree", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "true")}, "51e4aaa9b110+dirty"},
		{"no version control information", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "(devel)"},
		{"no build information", "", nil, "(devel)"},
	} {
		if got := versionOf(tc.ldflag, tc.bi); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
