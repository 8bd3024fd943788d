package portal

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"
)

// Page is one page of the portal. Adding a page is adding an entry to
// Pages: a template web/templates/<Template>.html (or the generic
// "resources" template with Kinds) and, for its live parts, a function
// in app.js keyed by Template.
type Page struct {
	Path     string
	Title    string
	Template string
	// Kinds, for the resources template: the kinds the page lists (all
	// kinds when empty).
	Kinds []string
}

// Pages are the portal's pages, in navigation order.
var Pages = []Page{
	{Path: "/", Title: "Overview", Template: "overview"},
	{Path: "/clients", Title: "Clients", Template: "clients"},
	{Path: "/topics", Title: "Topics", Template: "topics"},
	{Path: "/resources", Title: "Resources", Template: "resources"},
	{Path: "/devices", Title: "Devices & assets", Template: "resources", Kinds: []string{"Device", "Asset", "DiscoveredDevice"}},
	{Path: "/dataflows", Title: "Dataflows", Template: "resources", Kinds: []string{"Dataflow", "DataflowEndpoint", "DataflowProfile"}},
	{Path: "/schemas", Title: "Schemas", Template: "schemas"},
	{Path: "/state", Title: "State store", Template: "state"},
	{Path: "/diagnostics", Title: "Diagnostics", Template: "diagnostics"},
}

// pageData is what every page template gets.
type pageData struct {
	Page    Page
	Pages   []Page
	User    string
	CSRF    string
	Version string
	Kinds   string // comma-separated, for the resources template
	Next    string // login: where to go after
	Error   string // login: why it failed
}

func (p *Portal) parseTemplates() error {
	p.tmpl = make(map[string]*template.Template)
	names := map[string]bool{"login": true}
	for _, pg := range Pages {
		names[pg.Template] = true
	}
	for name := range names {
		t, err := template.New("layout.html").Funcs(template.FuncMap{
			"join": strings.Join,
		}).ParseFS(webFS, "web/templates/layout.html", "web/templates/"+name+".html")
		if err != nil {
			return fmt.Errorf("portal: template %s: %w", name, err)
		}
		p.tmpl[name] = t
	}
	return nil
}

func (p *Portal) render(w http.ResponseWriter, code int, name string, d pageData) {
	var buf bytes.Buffer
	if err := p.tmpl[name].Execute(&buf, d); err != nil {
		p.log.Error("portal: rendering a page", "page", name, "err", err)
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

func (p *Portal) routes() {
	m := http.NewServeMux()
	p.mux = m
	static := http.StripPrefix("/static/", http.FileServerFS(staticFS()))
	m.Handle("GET /static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		static.ServeHTTP(w, r)
	}))
	m.HandleFunc("GET /login", p.loginPage)
	m.HandleFunc("POST /login", p.loginPost)
	m.HandleFunc("POST /logout", p.authed(false, p.logout))
	for _, pg := range Pages {
		pattern := "GET " + pg.Path
		if pg.Path == "/" {
			pattern = "GET /{$}"
		}
		m.HandleFunc(pattern, p.authed(true, func(w http.ResponseWriter, r *http.Request, l *login) {
			p.render(w, http.StatusOK, pg.Template, pageData{Page: pg, Pages: Pages, User: l.user, CSRF: l.csrf,
				Version: p.status().Version, Kinds: strings.Join(pg.Kinds, ",")})
		}))
	}
	// The pages' data.
	m.HandleFunc("GET /ui/overview", p.authed(false, p.overview))
	m.HandleFunc("GET /ui/events/overview", p.authed(false, p.overviewEvents))
	m.HandleFunc("GET /ui/clients", p.authed(false, p.clients))
	m.HandleFunc("POST /ui/clients/disconnect", p.authed(false, p.disconnect))
	m.HandleFunc("POST /ui/clients/delete", p.authed(false, p.deleteSession))
	m.HandleFunc("GET /ui/events/clients", p.authed(false, p.clientEvents))
	m.HandleFunc("GET /ui/events/topics", p.authed(false, p.topicEvents))
	m.HandleFunc("GET /ui/topic", p.authed(false, p.topicMessage))
	m.HandleFunc("GET /ui/kinds", p.authed(false, p.kinds))
	m.HandleFunc("GET /ui/schemas", p.authed(false, p.schemas))
	m.HandleFunc("GET /ui/yaml/{plural}/{name}", p.authed(false, p.yaml))
	m.Handle("/ui/api/v1/", p.authed(false, p.proxyAPI))
	m.HandleFunc("GET /ui/state", p.authed(false, p.stateList))
	m.HandleFunc("POST /ui/state", p.authed(false, p.stateSet))
	m.HandleFunc("POST /ui/state/delete", p.authed(false, p.stateDelete))
	m.HandleFunc("GET /ui/logs", p.authed(false, p.logs))
	m.HandleFunc("GET /ui/events/logs", p.authed(false, p.logEvents))
	m.HandleFunc("GET /ui/bundle", p.authed(false, p.bundle))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "404 page not found", http.StatusNotFound)
	})
}

func (p *Portal) loginPage(w http.ResponseWriter, r *http.Request) {
	if l, _ := p.requestLogin(r); l != nil {
		http.Redirect(w, r, pathOnly(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	p.render(w, http.StatusOK, "login", pageData{Page: Page{Title: "Log in"}, Next: pathOnly(r.URL.Query().Get("next")), Version: p.status().Version})
}

func (p *Portal) loginPost(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	next := pathOnly(r.PostFormValue("next"))
	fail := func(code int, msg string) {
		p.render(w, code, "login", pageData{Page: Page{Title: "Log in"}, Next: next, Error: msg, Version: p.status().Version})
	}
	if !sameOrigin(r) {
		fail(http.StatusForbidden, "The login came from another site.")
		return
	}
	ip := remoteIP(r)
	if p.sess.throttled(ip, now) {
		fail(http.StatusTooManyRequests, "Too many failed attempts: wait a minute.")
		return
	}
	user, secret := strings.TrimSpace(r.PostFormValue("username")), r.PostFormValue("password")
	var who string
	switch {
	case user == "" && checkToken(strings.TrimSpace(secret), p.opts.Token):
		who = "token"
	case user != "" && verifyUser(r.Context(), p.opts.Resources, user, secret, p.log):
		who = user
	default:
		p.sess.failed(ip, now)
		p.log.Warn("portal login failed", "remote", ip, "user", user)
		if user == "" {
			fail(http.StatusUnauthorized, "Wrong token. Run `edgeport token` on the server to print it.")
		} else {
			fail(http.StatusUnauthorized, "Wrong user name or password.")
		}
		return
	}
	p.sess.succeeded(ip)
	id, _ := p.sess.create(who, now)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: id, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: int(sessionLifetime / time.Second)})
	p.log.Info("portal login", "remote", ip, "user", who)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (p *Portal) logout(w http.ResponseWriter, r *http.Request, _ *login) {
	if _, id := p.requestLogin(r); id != "" {
		p.sess.remove(id)
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
