package config

import (
	"net"
	"strconv"
	"strings"
)

// BrokerCluster configures cluster mode (Edgeport; docs/cluster.md): the
// nodes run as one broker on NATS JetStream. It is read when a node
// starts with `serve --cluster` (or --nats-url); a serve flag that is given
// wins over the field it matches. Azure IoT Operations sizes its broker
// with cardinality (frontend replicas, backend partitions and redundancy);
// here replicas is JetStream's replication and shards the number of
// session streams.
type BrokerCluster struct {
	// Name is the cluster's name, the same on every node.
	Name string `json:"name"`
	// Routes are the nodes' route addresses (host:port), every node
	// listed, the one reading it included.
	Routes []string `json:"routes"`
	// Replicas is the replication of the JetStream streams and buckets
	// (1-5; 3 by default: one node lost loses nothing).
	Replicas *int `json:"replicas"`
	// Shards is the number of streams persistent sessions are spread over
	// by client id (1-1024; 8 by default).
	Shards *int `json:"shards"`
	// CredentialsDir is a directory holding the node's route credentials
	// as `edgeport cluster init` makes them (secret, ca.crt, tls.crt,
	// tls.key): it stands for secretFile and tls. A --cluster-credentials,
	// --cluster-secret-file or --cluster-tls-* flag wins over it.
	CredentialsDir string `json:"credentialsDir,omitempty"`
	// SecretFile holds the cluster's shared secret, which routes
	// authenticate with (at least 16 characters).
	SecretFile string `json:"secretFile,omitempty"`
	// TLS makes routes mutual TLS against the cluster CA. A node whose
	// route listener is not on loopback needs secretFile and tls (or
	// credentialsDir).
	TLS *BrokerClusterTLS `json:"tls,omitempty"`
}

// BrokerClusterTLS are the PEM files of a node's route TLS.
type BrokerClusterTLS struct {
	// CAFile is the cluster CA, which every node's certificate must chain to.
	CAFile string `json:"caFile"`
	// CertFile is this node's certificate: server and client
	// authentication, with the DNS name route.edgeport.cluster.
	CertFile string `json:"certFile"`
	// KeyFile is its private key.
	KeyFile string `json:"keyFile"`
}

// Cluster defaults.
const (
	DefaultClusterReplicas = 3
	DefaultClusterShards   = 8
)

func defaultBrokerCluster(c *BrokerCluster) {
	if c == nil {
		return
	}
	setDefault(&c.Replicas, DefaultClusterReplicas)
	setDefault(&c.Shards, DefaultClusterShards)
}

func validateBrokerCluster(c *BrokerCluster, errs *Errors) {
	if c == nil {
		return
	}
	if c.Name != "" && !clusterName(c.Name) {
		errs.Add("spec.cluster.name", "must be 1-64 letters, digits, '-' or '_' (got %q)", c.Name)
	}
	for i, r := range c.Routes {
		addr := r
		if j := strings.Index(addr, "://"); j >= 0 {
			addr = addr[j+3:]
		}
		if strings.Contains(addr, "@") {
			// Not echoed: it would show the credentials.
			errs.Add("spec.cluster.routes["+strconv.Itoa(i)+"]", "a route address takes no credentials: routes authenticate with spec.cluster.secretFile")
			continue
		}
		host, port, err := net.SplitHostPort(addr)
		p, perr := strconv.Atoi(port)
		if err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
			errs.Add("spec.cluster.routes["+strconv.Itoa(i)+"]", "must be host:port with a port of 1-65535 (got %q)", r)
		}
	}
	if t := c.TLS; t != nil {
		for _, f := range []struct{ name, v string }{{"caFile", t.CAFile}, {"certFile", t.CertFile}, {"keyFile", t.KeyFile}} {
			if f.v == "" {
				errs.Add("spec.cluster.tls."+f.name, "required: route TLS needs the CA, the certificate and its key")
			}
		}
	}
	between(errs, "spec.cluster.replicas", *c.Replicas, 1, 5)
	between(errs, "spec.cluster.shards", *c.Shards, 1, 1024)
}

func clusterName(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
