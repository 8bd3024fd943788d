package cli

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/statestore"
)

type stateOptions struct {
	mqtt    mqttFlags
	addr    string // deprecated: host:port, now --url or --host/--port
	timeout time.Duration
	hex     bool
}

func newState(stdout, stderr io.Writer) *cobra.Command {
	o := &stateOptions{}
	cmd := &cobra.Command{
		Use:   "state",
		Short: "Read and write the state store (get, set, del, list) over MQTT",
		Long: `Read and write Edgeport's state store, the Azure IoT Operations-compatible
key-value store, by speaking its protocol over MQTT 5 to the broker given by
--url (or --host and --port, or $EDGEPORT_MQTT); TLS, user name and password
or token as for edgeport pub and sub. On a port with an authorization policy
the client needs to publish to the state store's invoke topic and to
subscribe to its response topic, clients/<client id>/#: see
docs/statestore.md.

With --hex, keys and values on the command line are hex-encoded and so is
the output. Without it, a value that is not UTF-8 text is printed in hex
(with a note on stderr).`,
	}
	f := cmd.PersistentFlags()
	o.mqtt.add(f, true)
	// --addr (host:port) came before --url; kept so that scripts work.
	f.StringVar(&o.addr, "addr", "", "MQTT address (host:port) of the broker; same as --url mqtt://HOST:PORT")
	_ = f.MarkHidden("addr")
	f.DurationVar(&o.timeout, "timeout", 5*time.Second, "how long to wait for the broker and each answer")
	f.BoolVar(&o.hex, "hex", false, "keys and values are hex-encoded, on the command line and in the output")

	var px time.Duration
	var nx, nex bool
	set := &cobra.Command{
		Use:   "set KEY VALUE",
		Short: "Set a key; --nx only if absent, --nex only if absent or equal, --px to expire",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if nx && nex {
				return errors.New("--nx and --nex exclude each other")
			}
			if px < 0 || px > 0 && px < time.Millisecond {
				return fmt.Errorf("--px: %v is not a positive number of milliseconds", px)
			}
			key, value, err := o.decode(args[0], args[1])
			if err != nil {
				return err
			}
			req := [][]byte{[]byte("SET"), key, value}
			if nx {
				req = append(req, []byte("NX"))
			}
			if nex {
				req = append(req, []byte("NEX"))
			}
			if px > 0 {
				req = append(req, []byte("PX"), strconv.AppendInt(nil, px.Milliseconds(), 10))
			}
			return o.run(cmd.Context(), func(c *stateConn) error {
				res, err := c.call(req...)
				if err != nil {
					return err
				}
				switch string(res) {
				case "+OK\r\n":
					fmt.Fprintln(stdout, "OK")
					return nil
				case ":-1\r\n":
					return fmt.Errorf("not set: the key exists (with another value)")
				}
				return unexpected(res)
			})
		},
	}
	set.Flags().DurationVar(&px, "px", 0, "expire the key after this long (e.g. 30s, 1500ms)")
	set.Flags().BoolVar(&nx, "nx", false, "set only if the key does not exist")
	set.Flags().BoolVar(&nex, "nex", false, "set only if the key does not exist or holds VALUE (renews a lease)")

	get := &cobra.Command{
		Use:   "get KEY",
		Short: "Print a key's value",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, _, err := o.decode(args[0], "")
			if err != nil {
				return err
			}
			return o.run(cmd.Context(), func(c *stateConn) error {
				res, err := c.call([]byte("GET"), key)
				if err != nil {
					return err
				}
				if string(res) == "$-1\r\n" {
					return fmt.Errorf("%s: not found", args[0])
				}
				v, ok := parseBulk(res)
				if !ok {
					return unexpected(res)
				}
				switch {
				case o.hex:
					fmt.Fprintln(stdout, hex.EncodeToString(v))
				case !utf8.Valid(v):
					fmt.Fprintln(stderr, "edgeport: the value is not UTF-8 text; printed in hex")
					fmt.Fprintln(stdout, hex.EncodeToString(v))
				default:
					fmt.Fprintln(stdout, string(v))
				}
				return nil
			})
		},
	}

	del := &cobra.Command{
		Use:   "del KEY",
		Short: "Delete a key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, _, err := o.decode(args[0], "")
			if err != nil {
				return err
			}
			return o.run(cmd.Context(), func(c *stateConn) error {
				res, err := c.call([]byte("DEL"), key)
				if err != nil {
					return err
				}
				switch string(res) {
				case ":1\r\n":
					fmt.Fprintln(stdout, "deleted")
				case ":0\r\n":
					fmt.Fprintln(stdout, "not found")
				default:
					return unexpected(res)
				}
				return nil
			})
		},
	}

	list := &cobra.Command{
		Use:   "list [PREFIX]",
		Short: "List the keys (that begin with PREFIX), one per line",
		Long: `List the keys, in byte order, through Edgeport's EDGEPORT.KEYS extension of
the protocol (Azure IoT Operations documents no way to enumerate keys).
Keys that are not printable UTF-8 are shown as hex:<HEX>.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var prefix []byte
			if len(args) == 1 {
				var err error
				if prefix, _, err = o.decode(args[0], ""); err != nil {
					return err
				}
			}
			return o.run(cmd.Context(), func(c *stateConn) error {
				cursor := []byte{}
				for {
					res, err := c.call([]byte(statestore.KeysCommand), prefix, cursor, []byte("1000"))
					if err != nil {
						return err
					}
					items, next, ok := statestore.ParseKeys(res)
					if !ok {
						return unexpected(res)
					}
					for _, k := range items {
						fmt.Fprintln(stdout, o.showKey(k))
					}
					if next == nil {
						return nil
					}
					cursor = next
				}
			})
		},
	}
	cmd.AddCommand(get, set, del, list)
	return cmd
}

// decode turns command-line key and value into bytes.
func (o *stateOptions) decode(key, value string) ([]byte, []byte, error) {
	if !o.hex {
		return []byte(key), []byte(value), nil
	}
	k, err := hex.DecodeString(key)
	if err != nil {
		return nil, nil, fmt.Errorf("--hex: key %q: %w", key, err)
	}
	v, err := hex.DecodeString(value)
	if err != nil {
		return nil, nil, fmt.Errorf("--hex: value: %w", err)
	}
	return k, v, nil
}

func (o *stateOptions) showKey(k []byte) string {
	if o.hex {
		return hex.EncodeToString(k)
	}
	if !utf8.Valid(k) || bytes.ContainsFunc(k, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return "hex:" + hex.EncodeToString(k)
	}
	return string(k)
}

func (o *stateOptions) run(ctx context.Context, f func(*stateConn) error) error {
	c, err := dialState(ctx, o)
	if err != nil {
		return err
	}
	defer c.close()
	return f(c)
}

func unexpected(res []byte) error {
	return fmt.Errorf("unexpected answer from the state store: %q", res)
}

// parseBulk reads a RESP bulk string that is the whole payload.
func parseBulk(b []byte) ([]byte, bool) {
	v, rest, ok := statestore.ReadBulk(b)
	return v, ok && v != nil && len(rest) == 0
}

// stateConn is a state store client: one request at a time, over the
// internal MQTT client's request/response helper.
type stateConn struct {
	c         *client.Client
	id        string
	respTopic string
	timeout   time.Duration
}

func dialState(ctx context.Context, o *stateOptions) (*stateConn, error) {
	if o.addr != "" {
		if o.mqtt.url != "" {
			return nil, errors.New("--addr and --url exclude each other")
		}
		o.mqtt.url = "mqtt://" + o.addr
	}
	if v, err := o.mqtt.protocolVersion(); err != nil {
		return nil, err
	} else if v != packet.V5 {
		return nil, errors.New("--mqtt-version: the state store protocol needs MQTT 5")
	}
	c, _, err := o.mqtt.connect(ctx, o.timeout, false)
	if err != nil {
		return nil, err
	}
	id := c.ClientID()
	return &stateConn{
		c: c, id: id, timeout: o.timeout,
		// Under clients/<id>/, which an authorization policy usually grants
		// a client ({principal.clientId}).
		respTopic: "clients/" + id + "/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response",
	}, nil
}

// call sends one request and returns the answer's payload. "-ERR" answers
// and RPC errors come back as errors.
func (c *stateConn) call(args ...[]byte) ([]byte, error) {
	var payload []byte
	payload = fmt.Appendf(payload, "*%d\r\n", len(args))
	for _, a := range args {
		payload = fmt.Appendf(payload, "$%d\r\n", len(a))
		payload = append(payload, a...)
		payload = append(payload, '\r', '\n')
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	resp, err := c.c.Request(ctx, &client.Message{
		Topic: statestore.InvokeTopic, QoS: 1, Payload: payload, ResponseTopic: c.respTopic,
		User: []packet.UserProperty{
			{Key: "__ts", Value: statestore.HLC{Wall: time.Now().UnixMilli(), Node: c.id}.String()},
			{Key: "__invId", Value: c.id},
			{Key: "__srcId", Value: c.id},
			{Key: "__protVer", Value: "1.0"},
		},
	})
	switch {
	case errors.Is(err, client.ErrNoResponder):
		return nil, errors.New("no state store is listening at this address")
	case errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("no answer from the state store within %v", c.timeout)
	case err != nil:
		return nil, err
	}
	return answer(resp)
}

// answer checks the RPC status and the RESP error form.
func answer(r *client.Message) ([]byte, error) {
	status, _ := r.UserValue("__stat")
	msg, _ := r.UserValue("__stMsg")
	if status != "200" {
		return nil, fmt.Errorf("the state store refused the request: status %s: %s", status, msg)
	}
	payload := r.Payload
	if e, ok := bytes.CutPrefix(payload, []byte("-ERR ")); ok {
		return nil, fmt.Errorf("state store: %s", strings.TrimSuffix(string(e), "\r\n"))
	}
	return payload, nil
}

func (c *stateConn) close() { _ = c.c.Close() }
