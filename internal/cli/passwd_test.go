package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/edgeport/edgeport/internal/auth"
	"github.com/edgeport/edgeport/internal/broker"
)

func runPasswd(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRoot(&out, &errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"passwd"}, args...))
	err := root.Execute()
	return out.String(), err
}

func TestPasswd(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		prefix string
	}{
		{[]string{"alice"}, "alice:$argon2id$v=19$m=19456,t=2,p=1$"},
		{[]string{"alice", "--bcrypt", "--cost", "4"}, "alice:$2a$04$"},
		{nil, "$argon2id$"},
	} {
		out, err := runPasswd(t, "s3cret pass\nignored\n", tc.args...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		line := strings.TrimSuffix(out, "\n")
		if !strings.HasPrefix(line, tc.prefix) || strings.Contains(line, "s3cret") {
			t.Fatalf("%v: output %q", tc.args, out)
		}
		hash := line
		if len(tc.args) > 0 {
			hash = strings.TrimPrefix(line, "alice:")
		}
		pw, err := auth.NewPasswords("", []auth.PasswordUser{{Username: "alice", PasswordHash: hash}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ci := &broker.ConnectInfo{Username: "alice", HasUsername: true, Password: []byte("s3cret pass"), HasPassword: true}
		if _, err := pw.Verify(context.Background(), ci); err != nil {
			t.Fatalf("%v: the printed hash does not verify: %v", tc.args, err)
		}
	}
	if _, err := runPasswd(t, "\n", "alice"); err == nil {
		t.Fatal("an empty password was hashed")
	}
	if _, err := runPasswd(t, "pw\n", "a:b"); err == nil {
		t.Fatal("a user name with a colon was accepted")
	}
}
