package broker

// Admission says whom a listener admits, as its security stands now.
type Admission string

// Admissions.
const (
	// AdmitsEveryone: no authentication; anonymous clients are accepted
	// (a listener never given security, or one open by choice).
	AdmitsEveryone Admission = "everyone"
	// AdmitsAuthenticated: an Authenticator decides (anonymous clients
	// may be accepted too when the listener allows them).
	AdmitsAuthenticated Admission = "authenticated"
	// AdmitsNobody: authentication is required and there is nothing to
	// authenticate with, so every client is refused.
	AdmitsNobody Admission = "nobody"
)

// ListenerAdmission reports whom the named listener admits; `edgeport
// check` uses it to tell an open port from one that refuses everyone.
func (b *Broker) ListenerAdmission(listener string) Admission {
	b.sec.mu.Lock()
	h := b.sec.m[listener]
	b.sec.mu.Unlock()
	if h == nil {
		return AdmitsEveryone
	}
	s := h.p.Load()
	switch {
	case s == nil:
		return AdmitsEveryone
	case s.authn != nil:
		return AdmitsAuthenticated
	case s.anonymous:
		return AdmitsEveryone
	}
	return AdmitsNobody
}
