package agenttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// Failure is how the proxy fails a request.
type Failure int

// The failures.
const (
	Pass       Failure = iota
	Fail503            // answer 503 without forwarding, as a server whose storage is down
	DropBefore         // close the connection without forwarding: the request never arrived
	DropAfter          // forward, then close the connection: the server acted, the answer is lost
	Fail400            // answer 400 without forwarding, as the server does to a request it finds invalid

	failOldServer // a report with lockStatus, answered as a server from before the field (LockAware off)
)

func (f Failure) String() string {
	return [...]string{"pass", "503", "drop before", "drop after", "400", "400 from an old server"}[f]
}

// Proxy is a reverse proxy in front of a server that fails chosen requests, logs every request
// and keeps what the server acknowledged: the material of every escrow it answered 2xx to (or
// processed, when the answer was dropped). A test checks against that record that a volume
// always has a recovery password the server holds.
type Proxy struct {
	URL string

	rp *httputil.ReverseProxy
	mu sync.Mutex
	n  int // requests seen
	// failAt fails the request with this number; failAll fails every request while set.
	failAt   map[int]Failure
	failAll  Failure
	held     map[string]string // key ID -> material the server holds
	requests []Request
	onAck    func(keyID string)
	// lockAware off makes the proxy answer a report that carries lockStatus as a server from
	// before the field did (400, "lockStatus: unknown field"), so the agent's fallback for older
	// servers is tested against the real server of today.
	lockAware bool
}

// LockAware sets whether the server behind the proxy knows lockStatus (it does: SPEC §7), or
// is answered for as a server from before the field (see Proxy.lockAware). On by default.
func (p *Proxy) LockAware(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lockAware = on
}

// Request is a request that went through the proxy.
type Request struct {
	N       int
	Method  string
	Path    string
	Status  int // 0 when dropped before an answer
	Failure Failure
	// Body is the request's body for reports (POST /api/agent/report), which hold no key
	// material; nil for other requests.
	Body []byte
}

func (r Request) String() string {
	return fmt.Sprintf("%d %s %s -> %d (%s)", r.N, r.Method, r.Path, r.Status, r.Failure)
}

// NewProxy starts a proxy in front of target, stopped when the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{failAt: map[int]Failure{}, held: map[string]string{}, lockAware: true}
	p.rp = &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(u) }}
	srv := httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// FailRequest fails the request that comes n requests from now (1 for the next one).
func (p *Proxy) FailRequest(n int, f Failure) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failAt[p.n+n] = f
}

// FailAll fails every request until called with Pass.
func (p *Proxy) FailAll(f Failure) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failAll = f
}

// OnAck sets a function called when the server acknowledges an escrow, before the answer goes
// back to the agent.
func (p *Proxy) OnAck(f func(keyID string)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onAck = f
}

// Count is the number of requests seen so far.
func (p *Proxy) Count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// Requests returns the log of requests.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.requests...)
}

// Held reports whether the server holds material for the key ID equal to material.
func (p *Proxy) Held(keyID, material string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.held[keyID]
	return ok && m == material
}

// HeldMaterial returns every material the server was seen to acknowledge.
func (p *Proxy) HeldMaterial() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]string, len(p.held))
	for k, v := range p.held {
		out[k] = v
	}
	return out
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.n++
	n := p.n
	f := p.failAll
	if ff, ok := p.failAt[n]; ok {
		f = ff
	}
	p.mu.Unlock()

	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	req := Request{N: n, Method: r.Method, Path: r.URL.Path, Failure: f}
	if r.Method == http.MethodPost && r.URL.Path == "/api/agent/report" {
		req.Body = body
		p.mu.Lock()
		aware := p.lockAware
		p.mu.Unlock()
		if !aware && bytes.Contains(body, []byte(`"lockStatus"`)) && f == Pass {
			f = failOldServer
		}
	}
	defer func() {
		p.mu.Lock()
		p.requests = append(p.requests, req)
		p.mu.Unlock()
	}()

	switch f {
	case Fail503:
		req.Status = http.StatusServiceUnavailable
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":{"code":"unavailable","message":"storage unavailable"}}`)
		return
	case failOldServer:
		req.Status = http.StatusBadRequest
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":{"code":"invalid_request","message":"lockStatus: unknown field"}}`)
		return
	case Fail400:
		req.Status = http.StatusBadRequest
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":{"code":"invalid","message":"volumeId: refused by the test proxy"}}`)
		return
	case DropBefore:
		drop(w)
		return
	}
	rec := httptest.NewRecorder()
	p.rp.ServeHTTP(rec, r)
	if f == DropAfter {
		// The server acted; only the answer is lost.
		p.noteEscrow(r, body, rec.Code)
		drop(w)
		return
	}
	req.Status = rec.Code
	p.noteEscrow(r, body, rec.Code)
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

// noteEscrow records the material of an escrow the server answered 2xx to.
func (p *Proxy) noteEscrow(r *http.Request, body []byte, status int) {
	if r.Method != http.MethodPut || !strings.HasPrefix(r.URL.Path, "/api/agent/keys/") || status < 200 || status > 299 {
		return
	}
	var req struct{ RecoveryPassword, RecoveryKey string }
	if json.Unmarshal(body, &req) != nil {
		return
	}
	keyID := strings.TrimPrefix(r.URL.Path, "/api/agent/keys/")
	p.mu.Lock()
	p.held[keyID] = req.RecoveryPassword + req.RecoveryKey
	hook := p.onAck
	p.mu.Unlock()
	if hook != nil {
		hook(keyID)
	}
}

// drop closes the client's connection without an answer.
func drop(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}

// CrashTransport wraps the agent's HTTP transport to stand for the agent's process dying just
// before a request is sent or just after its answer arrived: it panics with an HTTPCrash, which
// the test recovers before starting a new agent. The panic happens in the goroutine that sent
// the request, the agent's own, because http.Client calls RoundTrip there.
type CrashTransport struct {
	Base http.RoundTripper
	mu   sync.Mutex
	arm  *crashPlan
}

type crashPlan struct {
	method, pathPrefix string
	left               int
	after              bool
}

// HTTPCrash is the panic value of a CrashTransport.
type HTTPCrash struct {
	Method, Path string
	After        bool
}

func (c HTTPCrash) String() string {
	when := "before"
	if c.After {
		when = "after"
	}
	return fmt.Sprintf("crash %s %s %s", when, c.Method, c.Path)
}

// Arm makes the n-th request from now whose method and path match (an empty method matches
// any) crash, before it is sent or after its answer came.
func (c *CrashTransport) Arm(method, pathPrefix string, n int, after bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.arm = &crashPlan{method: method, pathPrefix: pathPrefix, left: n, after: after}
}

// Disarm cancels an armed crash.
func (c *CrashTransport) Disarm() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.arm = nil
}

// RoundTrip implements http.RoundTripper.
func (c *CrashTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	var strike *crashPlan
	if a := c.arm; a != nil && (a.method == "" || a.method == r.Method) && strings.HasPrefix(r.URL.Path, a.pathPrefix) {
		if a.left--; a.left == 0 {
			strike, c.arm = a, nil
		}
	}
	c.mu.Unlock()
	crash := func(after bool) HTTPCrash { return HTTPCrash{Method: r.Method, Path: r.URL.Path, After: after} }
	if strike != nil && !strike.after {
		panic(crash(false))
	}
	resp, err := c.Base.RoundTrip(r)
	if strike != nil {
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		panic(crash(true))
	}
	return resp, err
}
