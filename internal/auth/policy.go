package auth

import (
	"encoding/base64"
	"fmt"

	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/config"
)

// Policy is a compiled BrokerAuthorization: allow-only rules, so whatever
// no rule allows is denied. It is immutable and safe for concurrent use; a
// changed resource compiles into a new Policy.
type Policy struct {
	rules []rule
	cache bool
}

var _ broker.Authorizer = (*Policy)(nil)
var _ broker.DecisionCacher = (*Policy)(nil)

type rule struct {
	// Principals: any of them matches.
	clientIDs, usernames []glob
	attrs                []map[string]string

	connect   []connectGrant
	publish   []topicPattern
	subscribe []topicPattern
	keys      []keyGrant
}

// connectGrant allows Connect to the client IDs its globs match, or to
// every client ID when it has none.
type connectGrant struct{ clientIDs []glob }

// keyGrant allows reading, writing or both on state store keys.
type keyGrant struct {
	read, write bool
	pattern     *glob  // keyType Pattern
	exact       string // keyType String, or Binary decoded
}

// DenyAll is the Policy of a port whose BrokerAuthorization is missing or
// broken: a policy is attached, so nothing is allowed.
var DenyAll = &Policy{}

// NewPolicy compiles a BrokerAuthorization spec.
func NewPolicy(spec *config.BrokerAuthorizationSpec) (*Policy, error) {
	pol := &Policy{cache: spec.AuthorizationPolicies.Cache != "Disabled"}
	for i, r := range spec.AuthorizationPolicies.Rules {
		cr, err := compileRule(&r)
		if err != nil {
			return nil, fmt.Errorf("rules[%d]: %w", i, err)
		}
		pol.rules = append(pol.rules, cr)
	}
	return pol, nil
}

func compileRule(r *config.AuthorizationRule) (rule, error) {
	var cr rule
	for _, id := range r.Principals.ClientIDs {
		g, err := compileGlob(id, false, false)
		if err != nil {
			return cr, fmt.Errorf("principals.clientIds: %w", err)
		}
		cr.clientIDs = append(cr.clientIDs, g)
	}
	for _, u := range r.Principals.Usernames {
		g, err := compileGlob(u, false, false)
		if err != nil {
			return cr, fmt.Errorf("principals.usernames: %w", err)
		}
		cr.usernames = append(cr.usernames, g)
	}
	cr.attrs = r.Principals.Attributes
	for j, br := range r.BrokerResources {
		switch br.Method {
		case config.MethodConnect:
			var cg connectGrant
			for _, id := range br.ClientIDs {
				g, err := compileGlob(id, false, true)
				if err != nil {
					return cr, fmt.Errorf("brokerResources[%d].clientIds: %w", j, err)
				}
				cg.clientIDs = append(cg.clientIDs, g)
			}
			cr.connect = append(cr.connect, cg)
		case config.MethodPublish, config.MethodSubscribe:
			for _, t := range br.Topics {
				tp, err := compileTopic(t)
				if err != nil {
					return cr, fmt.Errorf("brokerResources[%d].topics: %w", j, err)
				}
				if br.Method == config.MethodPublish {
					cr.publish = append(cr.publish, tp)
				} else {
					cr.subscribe = append(cr.subscribe, tp)
				}
			}
		default:
			return cr, fmt.Errorf("brokerResources[%d]: unknown method %q", j, br.Method)
		}
	}
	for j, sr := range r.StateStoreResources {
		read := sr.Method == "Read" || sr.Method == "ReadWrite"
		write := sr.Method == "Write" || sr.Method == "ReadWrite"
		for _, k := range sr.Keys {
			kg := keyGrant{read: read, write: write}
			switch sr.KeyType {
			case config.KeyTypeString:
				kg.exact = k
			case config.KeyTypeBinary:
				b, err := base64.StdEncoding.DecodeString(k)
				if err != nil {
					return cr, fmt.Errorf("stateStoreResources[%d].keys: %q is not base64", j, k)
				}
				kg.exact = string(b)
			default:
				g, err := compileGlob(k, true, true)
				if err != nil {
					return cr, fmt.Errorf("stateStoreResources[%d].keys: %w", j, err)
				}
				kg.pattern = &g
			}
			cr.keys = append(cr.keys, kg)
		}
	}
	return cr, nil
}

// matches reports whether p is one of the rule's principals. A principal
// without a user name (anonymous) matches no username entry, not even *.
func (r *rule) matches(p *broker.Principal) bool {
	for i := range r.clientIDs {
		if r.clientIDs[i].match(p, p.ClientID) {
			return true
		}
	}
	if p.Username != "" {
		for i := range r.usernames {
			if r.usernames[i].match(p, p.Username) {
				return true
			}
		}
	}
	for _, set := range r.attrs {
		if attrsMatch(set, p.Attributes) {
			return true
		}
	}
	return false
}

// attrsMatch: every key of the rule's set must be present with its value.
func attrsMatch(set, have map[string]string) bool {
	if len(set) == 0 {
		return false
	}
	for k, v := range set {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// Allow implements broker.Authorizer.
func (pol *Policy) Allow(p *broker.Principal, op broker.Op, topic string) bool {
	if p == nil {
		return false
	}
	for i := range pol.rules {
		r := &pol.rules[i]
		if !r.matches(p) {
			continue
		}
		switch op {
		case broker.OpConnect:
			for _, cg := range r.connect {
				if len(cg.clientIDs) == 0 {
					return true
				}
				for j := range cg.clientIDs {
					if cg.clientIDs[j].match(p, p.ClientID) {
						return true
					}
				}
			}
		case broker.OpPublish:
			for j := range r.publish {
				if r.publish[j].matchName(p, topic) {
					return true
				}
			}
		case broker.OpSubscribe:
			for j := range r.subscribe {
				if r.subscribe[j].covers(p, topic) {
					return true
				}
			}
		}
	}
	return false
}

// CacheDecisions implements broker.DecisionCacher: Azure IoT Operations'
// cache setting.
func (pol *Policy) CacheDecisions() bool { return pol.cache }

// AllowKey reports whether p may read (GET, KEYNOTIFY, listing) or write
// (SET, DEL, VDEL) a state store key.
func (pol *Policy) AllowKey(p *broker.Principal, key []byte, write bool) bool {
	if p == nil {
		return false
	}
	k := string(key) // no copy: the conversion does not escape
	for i := range pol.rules {
		r := &pol.rules[i]
		if len(r.keys) == 0 || !r.matches(p) {
			continue
		}
		for j := range r.keys {
			kg := &r.keys[j]
			if write && !kg.write || !write && !kg.read {
				continue
			}
			if kg.pattern != nil {
				if kg.pattern.match(p, k) {
					return true
				}
			} else if kg.exact == k {
				return true
			}
		}
	}
	return false
}
