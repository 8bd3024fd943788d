package cli

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/edgeport/edgeport/internal/mqtt/client"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// Environment variable giving the MQTT address of the commands that talk
// MQTT, as a URL or host:port.
const envMQTT = "EDGEPORT_MQTT"

// mqttFlags are the connection flags of every command that talks MQTT
// (state, check, pub, sub), named as mosquitto_pub and mosquitto_sub name
// them where they can be.
type mqttFlags struct {
	url          string
	host         string
	port         int
	useTLS       bool
	cafile       string
	cert, key    string
	insecure     bool
	username     string
	password     string
	token        string
	clientID     string
	version      string
	keepAlive    time.Duration
	withEndpoint bool // the command connects to one address (not check)
}

// add registers the flags. With endpoint, the address flags are added too;
// check discovers its addresses and takes only credentials and TLS.
func (f *mqttFlags) add(fl *pflag.FlagSet, endpoint bool) {
	f.withEndpoint = endpoint
	if endpoint {
		fl.StringVarP(&f.url, "url", "L", os.Getenv(envMQTT), "broker URL: mqtt://HOST:PORT, mqtts://HOST:PORT, ws://HOST:PORT/PATH or wss://HOST:PORT/PATH (env "+envMQTT+"); overrides --host and --port")
		fl.StringVar(&f.host, "host", "127.0.0.1", "broker host")
		fl.IntVarP(&f.port, "port", "p", 0, "broker port (default 1883, 8883 with TLS)")
		fl.BoolVar(&f.useTLS, "tls", false, "connect with TLS (implied by mqtts://, wss:// and --cafile)")
		fl.StringVarP(&f.clientID, "id", "i", "", "client identifier (default: a random edgeport-cli-… one)")
	}
	fl.StringVar(&f.cafile, "cafile", "", "PEM file of the CA certificates that verify the broker (default: the system's)")
	fl.StringVar(&f.cert, "cert", "", "PEM client certificate, for brokers that authenticate by X.509")
	fl.StringVar(&f.key, "key", "", "PEM private key of --cert")
	fl.BoolVar(&f.insecure, "insecure", false, "do not verify the broker's certificate (testing only)")
	fl.StringVarP(&f.username, "username", "u", "", "MQTT user name")
	fl.StringVarP(&f.password, "password", "P", "", "MQTT password")
	fl.StringVar(&f.token, "mqtt-token", "", "token (JWT or Kubernetes service account token) sent with MQTT 5 enhanced authentication K8S-SAT (3.1.1: as password of user K8S-SAT)")
	fl.StringVarP(&f.version, "mqtt-version", "V", "5", "MQTT version: 5 or 311")
}

// protocolVersion parses --mqtt-version.
func (f *mqttFlags) protocolVersion() (packet.Version, error) {
	switch strings.ToLower(strings.TrimPrefix(strings.ToLower(f.version), "mqttv")) {
	case "5", "5.0":
		return packet.V5, nil
	case "311", "3.1.1", "4":
		return packet.V311, nil
	}
	return 0, fmt.Errorf("--mqtt-version: %q is not 5 or 311", f.version)
}

// tlsConfig builds the TLS settings; nil when none is asked for.
func (f *mqttFlags) tlsConfig(serverName string) (*tls.Config, error) {
	if f.cafile == "" && f.cert == "" && f.key == "" && !f.insecure && !f.useTLS {
		return nil, nil
	}
	conf := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if f.cafile != "" {
		pem, err := os.ReadFile(f.cafile)
		if err != nil {
			return nil, fmt.Errorf("--cafile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cafile: %s holds no PEM certificate", f.cafile)
		}
		conf.RootCAs = pool
	}
	if (f.cert == "") != (f.key == "") {
		return nil, errors.New("--cert and --key go together")
	}
	if f.cert != "" {
		c, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("--cert/--key: %w", err)
		}
		conf.Certificates = []tls.Certificate{c}
	}
	conf.InsecureSkipVerify = f.insecure //nolint:gosec // asked for by --insecure
	return conf, nil
}

// endpoint returns the URL to dial and its dialer.
func (f *mqttFlags) endpoint() (string, client.Dialer, error) {
	raw := f.url
	if raw == "" {
		scheme, port := "mqtt", 1883
		if f.useTLS || f.cafile != "" || f.cert != "" {
			scheme, port = "mqtts", 8883
		}
		if f.port != 0 {
			port = f.port
		}
		if f.port < 0 || f.port > 65535 {
			return "", nil, fmt.Errorf("--port: %d is not 1-65535", f.port)
		}
		raw = scheme + "://" + net.JoinHostPort(f.host, strconv.Itoa(port))
	} else if !strings.Contains(raw, "://") {
		raw = "mqtt://" + raw // host:port, as EDGEPORT_MQTT may say
	}
	host := ""
	if i := strings.Index(raw, "://"); i >= 0 {
		rest := raw[i+3:]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			rest = rest[:j]
		}
		if h, _, err := net.SplitHostPort(rest); err == nil {
			host = h
		} else {
			host = rest
		}
	}
	tlsConf, err := f.tlsConfig(host)
	if err != nil {
		return "", nil, err
	}
	if tlsConf != nil && (strings.HasPrefix(raw, "mqtt://") || strings.HasPrefix(raw, "ws://")) && f.url != "" {
		return "", nil, fmt.Errorf("--url %s is not a TLS address: use mqtts:// or wss:// with --cafile, --cert or --tls", raw)
	}
	d, err := client.URL(raw, tlsConf)
	if err != nil {
		return "", nil, fmt.Errorf("--url: %w", err)
	}
	return raw, d, nil
}

// options fills the client options the flags decide, for dialer d.
func (f *mqttFlags) options(d client.Dialer) (client.Options, error) {
	v, err := f.protocolVersion()
	if err != nil {
		return client.Options{}, err
	}
	o := client.Options{Dialer: d, Version: v, ClientID: f.clientID, CleanStart: true, Username: f.username}
	if f.password != "" {
		o.Password = []byte(f.password)
	}
	if f.token != "" {
		if f.username != "" || f.password != "" {
			return client.Options{}, errors.New("--mqtt-token excludes --username and --password")
		}
		if v == packet.V5 {
			o.AuthMethod, o.AuthData = "K8S-SAT", []byte(f.token)
		} else {
			o.Username, o.Password = "K8S-SAT", []byte(f.token)
		}
	}
	if o.ClientID == "" {
		var rnd [6]byte
		_, _ = rand.Read(rnd[:])
		o.ClientID = "edgeport-cli-" + hex.EncodeToString(rnd[:])
	}
	if f.keepAlive > 0 {
		o.KeepAlive = f.keepAlive
	}
	return o, nil
}

// connect dials the endpoint and returns a connected client, which the
// caller stops. It does not reconnect: a command reports a lost connection.
func (f *mqttFlags) connect(ctx context.Context, timeout time.Duration, reconnect bool) (*client.Client, string, error) {
	where, d, err := f.endpoint()
	if err != nil {
		return nil, "", err
	}
	o, err := f.options(d)
	if err != nil {
		return nil, "", err
	}
	o.ConnectTimeout = timeout
	o.NoReconnect = !reconnect
	c, err := client.New(o)
	if err != nil {
		return nil, "", err
	}
	if err := c.Connect(ctx); err != nil {
		_ = c.Close()
		return nil, "", fmt.Errorf("connecting to %s: %w", where, err)
	}
	return c, where, nil
}
