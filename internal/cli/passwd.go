package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/auth"
)

func newPasswd(stdout, stderr io.Writer) *cobra.Command {
	var useBcrypt bool
	var cost int
	cmd := &cobra.Command{
		Use:   "passwd [USERNAME]",
		Short: "Print a password hash for UsernamePassword authentication",
		Long: `Read a password and print its hash: argon2id (PHC string format,
$argon2id$v=19$m=19456,t=2,p=1$...) or, with --bcrypt, bcrypt. With USERNAME
the output is a line of a password file ("username:hash"); append
":attr=value,attr=value" for authorization attributes.

On a terminal the password is asked twice without echo; otherwise the first
line of standard input is the password:

  edgeport passwd alice >> /etc/edgeport/passwords
  printf '%s\n' "$PW" | edgeport passwd alice`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && (args[0] == "" || strings.ContainsAny(args[0], ":\r\n")) {
				return fmt.Errorf("user name %q: must not be empty or contain a colon", args[0])
			}
			pw, err := readPassword(cmd.InOrStdin(), stderr)
			if err != nil {
				return err
			}
			var hash string
			if useBcrypt {
				hash, err = auth.HashPasswordBcrypt(pw, cost)
			} else {
				hash, err = auth.HashPassword(pw)
			}
			if err != nil {
				return err
			}
			if len(args) == 1 {
				hash = args[0] + ":" + hash
			}
			fmt.Fprintln(stdout, hash)
			return nil
		},
	}
	cmd.Flags().BoolVar(&useBcrypt, "bcrypt", false, "print a bcrypt hash instead of argon2id (passwords of at most 72 bytes)")
	cmd.Flags().IntVar(&cost, "cost", 12, "bcrypt cost (4 to 31)")
	return cmd
}

// readPassword asks twice on a terminal, echo off; otherwise it reads the
// first line of in.
func readPassword(in io.Reader, prompt io.Writer) ([]byte, error) {
	if f, ok := in.(*os.File); ok && isTerminal(f) {
		first, err := askNoEcho(f, prompt, "Password: ")
		if err != nil {
			return nil, err
		}
		again, err := askNoEcho(f, prompt, "Repeat password: ")
		if err != nil {
			return nil, err
		}
		if string(first) != string(again) {
			return nil, errors.New("the passwords differ")
		}
		if len(first) == 0 {
			return nil, errors.New("empty password")
		}
		return first, nil
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading the password: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty password (give it on the first line of standard input)")
	}
	return []byte(line), nil
}

func askNoEcho(f *os.File, prompt io.Writer, question string) ([]byte, error) {
	fmt.Fprint(prompt, question)
	restore, err := echoOff(f)
	if err != nil {
		return nil, err
	}
	line, rerr := bufio.NewReader(f).ReadString('\n')
	restore()
	fmt.Fprintln(prompt)
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		return nil, rerr
	}
	return []byte(strings.TrimRight(line, "\r\n")), nil
}
