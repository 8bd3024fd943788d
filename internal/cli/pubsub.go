package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// messageFlags are the message properties pub sets.
type messageFlags struct {
	qos           int
	retain        bool
	contentType   string
	responseTopic string
	correlation   string
	expiry        time.Duration
	user          []string
}

func (m *messageFlags) message(topic string, payload []byte) (*client.Message, error) {
	if m.qos < 0 || m.qos > 2 {
		return nil, fmt.Errorf("--qos: %d is not 0, 1 or 2", m.qos)
	}
	msg := &client.Message{Topic: topic, Payload: payload, QoS: byte(m.qos), Retain: m.retain,
		ContentType: m.contentType, ResponseTopic: m.responseTopic}
	if m.correlation != "" {
		msg.CorrelationData = []byte(m.correlation)
	}
	if m.expiry < 0 {
		return nil, errors.New("--message-expiry: negative")
	}
	msg.MessageExpiry = uint32((m.expiry + time.Second - 1) / time.Second)
	for _, kv := range m.user {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--user-property: %q is not NAME=VALUE", kv)
		}
		msg.User = append(msg.User, packet.UserProperty{Key: k, Value: v})
	}
	return msg, nil
}

func newPub() *cobra.Command {
	var (
		conn                 mqttFlags
		mf                   messageFlags
		topic, message, file string
		fromStdin, lines     bool
		null                 bool
		repeat               int
		timeout              time.Duration
	)
	cmd := &cobra.Command{
		Use:   "pub -t TOPIC (-m MESSAGE | -f FILE | -s | -l | -n)",
		Short: "Publish MQTT messages, as mosquitto_pub does",
		Long: `Publish one message (-m, -f, -s, -n) or one per line of standard input (-l)
to --url (or --host and --port). QoS 1 and 2 publishes wait for the broker's
acknowledgement; a refusal is reported with its reason code and the exit
status is 1.`,
		Example: `  edgeport pub -t sensors/1/temp -m 21.5
  edgeport pub -L mqtts://broker:8883 --cafile ca.pem -u dev -P secret -t a/b -q 1 -m hello
  tail -f app.log | edgeport pub -t logs/app -l`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if topic == "" {
				return errors.New("-t/--topic is required")
			}
			sources := 0
			for _, set := range []bool{cmd.Flags().Changed("message"), file != "", fromStdin, lines, null} {
				if set {
					sources++
				}
			}
			if sources != 1 {
				return errors.New("give exactly one of -m, -f, -s, -l and -n")
			}
			if repeat < 1 {
				return fmt.Errorf("--repeat: %d is not positive", repeat)
			}
			ctx := cmd.Context()
			c, _, err := conn.connect(ctx, timeout, false)
			if err != nil {
				return err
			}
			defer c.Close()
			send := func(payload []byte) error {
				m, err := mf.message(topic, payload)
				if err != nil {
					return err
				}
				pctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				return c.Publish(pctx, m)
			}
			if lines {
				sc := bufio.NewScanner(cmd.InOrStdin())
				sc.Buffer(make([]byte, 64<<10), 256<<20)
				for sc.Scan() {
					if err := send(sc.Bytes()); err != nil {
						return err
					}
				}
				return sc.Err()
			}
			var payload []byte
			switch {
			case file != "":
				if payload, err = os.ReadFile(file); err != nil {
					return fmt.Errorf("-f: %w", err)
				}
			case fromStdin:
				if payload, err = io.ReadAll(cmd.InOrStdin()); err != nil {
					return fmt.Errorf("reading standard input: %w", err)
				}
			case !null:
				payload = []byte(message)
			}
			for range repeat {
				if err := send(payload); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	conn.add(f, true)
	f.StringVarP(&topic, "topic", "t", "", "topic to publish to")
	f.StringVarP(&message, "message", "m", "", "message payload")
	f.StringVarP(&file, "file", "f", "", "send the contents of FILE as the payload")
	f.BoolVarP(&fromStdin, "stdin-file", "s", false, "send all of standard input as one message")
	f.BoolVarP(&lines, "stdin-line", "l", false, "send each line of standard input as a message")
	f.BoolVarP(&null, "null-message", "n", false, "send an empty payload")
	f.IntVar(&repeat, "repeat", 1, "publish the message this many times")
	f.IntVarP(&mf.qos, "qos", "q", 0, "QoS: 0, 1 or 2")
	f.BoolVarP(&mf.retain, "retain", "r", false, "retain the message")
	f.StringVar(&mf.contentType, "content-type", "", "MQTT 5 content type")
	f.StringVar(&mf.responseTopic, "response-topic", "", "MQTT 5 response topic")
	f.StringVar(&mf.correlation, "correlation-data", "", "MQTT 5 correlation data")
	f.DurationVar(&mf.expiry, "message-expiry", 0, "MQTT 5 message expiry interval (e.g. 30s)")
	f.StringArrayVar(&mf.user, "user-property", nil, "MQTT 5 user property NAME=VALUE (repeatable)")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the broker and each acknowledgement")
	return cmd
}

func newSub(stdout io.Writer) *cobra.Command {
	var (
		conn      mqttFlags
		topics    []string
		qos       int
		count     int
		wait      time.Duration
		verbose   bool
		pretty    bool
		output    string
		noRetain  bool
		timeout   time.Duration
		sessionEx time.Duration
	)
	cmd := &cobra.Command{
		Use:   "sub -t FILTER [-t FILTER…]",
		Short: "Subscribe and print MQTT messages, as mosquitto_sub does",
		Long: `Subscribe to one or more topic filters on --url (or --host and --port) and
print each message's payload on its own line (-v: "topic payload"), until
--count messages arrived, --wait passed without a message, or the command is
interrupted. --pretty indents JSON payloads; -o json prints one JSON object
per message (topic, qos, retain, payload, and the MQTT 5 properties), with
payloads that are not UTF-8 in base64. The client reconnects and resumes its
session when the connection is lost.`,
		Example: `  edgeport sub -t 'sensors/#' -v
  edgeport sub -t devices/+/state -C 1 --pretty
  edgeport sub -L ws://127.0.0.1:8080/mqtt -t a/b -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(topics) == 0 {
				return errors.New("-t/--topic is required")
			}
			if qos < 0 || qos > 2 {
				return fmt.Errorf("--qos: %d is not 0, 1 or 2", qos)
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("-o: %q is not text or json", output)
			}
			if count < 0 {
				return fmt.Errorf("-C/--count: %d is negative", count)
			}
			ctx := cmd.Context()
			where, d, err := conn.endpoint()
			if err != nil {
				return err
			}
			o, err := conn.options(d)
			if err != nil {
				return err
			}
			o.ConnectTimeout = timeout
			o.SessionExpiry = sessionEx
			msgs := make(chan *client.Message, 1024)
			o.DefaultHandler = func(ctx context.Context, m *client.Message) {
				select {
				case msgs <- m:
				case <-ctx.Done():
				}
			}
			c, err := client.New(o)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.Connect(ctx); err != nil {
				return fmt.Errorf("connecting to %s: %w", where, err)
			}
			var filters []packet.Subscription
			for _, t := range topics {
				rh := byte(0)
				if noRetain {
					rh = 2
				}
				filters = append(filters, packet.Subscription{Filter: t, QoS: byte(qos), RetainHandling: rh})
			}
			sctx, cancel := context.WithTimeout(ctx, timeout)
			err = c.Subscribe(sctx, client.Subscription{Filters: filters, Handler: func(ctx context.Context, m *client.Message) {
				select {
				case msgs <- m:
				case <-ctx.Done():
				}
			}})
			cancel()
			if err != nil {
				return err
			}
			out := bufio.NewWriter(stdout)
			defer out.Flush()
			var idle <-chan time.Time
			var timer *time.Timer
			if wait > 0 {
				timer = time.NewTimer(wait)
				defer timer.Stop()
				idle = timer.C
			}
			for n := 0; count == 0 || n < count; n++ {
				select {
				case m := <-msgs:
					if err := printMessage(out, m, verbose, pretty, output); err != nil {
						return err
					}
					if err := out.Flush(); err != nil {
						return err
					}
					if timer != nil {
						timer.Reset(wait)
					}
				case <-idle:
					return fmt.Errorf("no message within --wait %v", wait)
				case <-ctx.Done():
					return nil
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	conn.add(f, true)
	f.StringArrayVarP(&topics, "topic", "t", nil, "topic filter to subscribe to (repeatable)")
	f.IntVarP(&qos, "qos", "q", 0, "maximum QoS of the subscription: 0, 1 or 2")
	f.IntVarP(&count, "count", "C", 0, "exit after this many messages (0: no limit)")
	f.DurationVarP(&wait, "wait", "W", 0, "exit with an error when no message arrives for this long (0: wait forever)")
	f.BoolVarP(&verbose, "verbose", "v", false, "print the topic before each payload")
	f.BoolVar(&pretty, "pretty", false, "indent JSON payloads")
	f.StringVarP(&output, "output", "o", "text", "text, or json (one object per message)")
	f.BoolVarP(&noRetain, "no-retained", "R", false, "do not receive retained messages")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the broker to connect and subscribe")
	f.DurationVar(&sessionEx, "session-expiry", 0, "keep the session this long after a disconnection (with --id, a later sub resumes it)")
	return cmd
}

// printMessage writes one received message.
func printMessage(w io.Writer, m *client.Message, verbose, pretty bool, output string) error {
	if output == "json" {
		rec := map[string]any{"topic": m.Topic, "qos": m.QoS, "retain": m.Retain}
		if utf8.Valid(m.Payload) {
			if pretty && json.Valid(m.Payload) {
				rec["payload"] = json.RawMessage(m.Payload)
			} else {
				rec["payload"] = string(m.Payload)
			}
		} else {
			rec["payloadBase64"] = base64.StdEncoding.EncodeToString(m.Payload)
		}
		if m.ContentType != "" {
			rec["contentType"] = m.ContentType
		}
		if m.ResponseTopic != "" {
			rec["responseTopic"] = m.ResponseTopic
		}
		if len(m.CorrelationData) > 0 {
			rec["correlationData"] = string(m.CorrelationData)
		}
		if len(m.User) > 0 {
			var ups [][2]string
			for _, u := range m.User {
				ups = append(ups, [2]string{u.Key, u.Value})
			}
			rec["userProperties"] = ups
		}
		enc := json.NewEncoder(w)
		if pretty {
			enc.SetIndent("", "  ")
		}
		return enc.Encode(rec)
	}
	payload := m.Payload
	if pretty && json.Valid(payload) {
		var buf bytes.Buffer
		if err := json.Indent(&buf, payload, "", "  "); err == nil {
			payload = buf.Bytes()
		}
	}
	if verbose {
		if _, err := fmt.Fprintf(w, "%s ", m.Topic); err != nil {
			return err
		}
	}
	if _, err := w.Write(payload); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}
