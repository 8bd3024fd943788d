package app

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDataDirExposed(t *testing.T) {
	own := os.Getegid()
	for _, tc := range []struct {
		name   string
		mode   os.FileMode
		groups []int
		want   bool
	}{
		{"private", 0o700, []int{own}, false},
		{"others may enter", 0o705, []int{own}, true},
		// Kubernetes' fsGroup volume: the group is the pod's own.
		{"own group", 0o770 | os.ModeSetgid, []int{own}, false},
		{"someone else's group", 0o770, []int{own + 1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			// the directory's group is the process's own (a new directory's)
			// unless setgid inheritance says otherwise: fake membership instead
			// of changing ownership, which needs privileges.
			groups := tc.groups
			if tc.groups[0] == own {
				gid, ok := fileGroup(fi)
				if !ok {
					t.Fatal("no owning group")
				}
				groups = append(groups, gid)
			}
			if got := dataDirExposed(fi, groups); got != tc.want {
				t.Fatalf("dataDirExposed(%#o, %v) = %v, want %v", fi.Mode().Perm(), groups, got, tc.want)
			}
		})
	}
}
