package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/bitlockertest"
)

// testCA is a certificate authority made for one test: it signs the receivers' server
// certificates and the client certificates Keyward presents to them.
type testCA struct {
	dir    string
	caFile string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	serial int64
}

func newTestCA(t *testing.T, dir string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "keyward test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{dir: dir, caFile: filepath.Join(dir, "ca.pem"), cert: cert, key: key, serial: 1}
	if err := os.WriteFile(ca.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue writes a certificate for 127.0.0.1 signed by the CA, for a server or a client, and its
// key, and returns their paths.
func (ca *testCA) issue(t *testing.T, name string, usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{name},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+".key")
	for f, b := range map[string][]byte{certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyFile: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// rsyslog is a real rsyslogd started by the test: imtcp on a port of its own (with gtls when
// given a CA, requiring a client certificate it signed), writing each message with omfile
// through a template that keeps the structured data.
type rsyslog struct {
	dir, conf, out string
	port           int
	cmd            *exec.Cmd
}

func startRsyslog(t *testing.T, ca *testCA) *rsyslog {
	t.Helper()
	bin := requireProgram(t, "rsyslogd", "KEYWARD_TEST_REQUIRE_RSYSLOG")
	dir := t.TempDir()
	r := &rsyslog{dir: dir, conf: filepath.Join(dir, "rsyslog.conf"), out: filepath.Join(dir, "received.log"), port: freePort(t)}
	var conf strings.Builder
	fmt.Fprintf(&conf, "global(workDirectory=%q maxMessageSize=\"64k\"", dir)
	if ca != nil {
		cert, key := ca.issue(t, "localhost", x509.ExtKeyUsageServerAuth)
		fmt.Fprintf(&conf, " defaultNetstreamDriverCAFile=%q defaultNetstreamDriverCertFile=%q defaultNetstreamDriverKeyFile=%q)\n", ca.caFile, cert, key)
		conf.WriteString(`module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")` + "\n")
	} else {
		conf.WriteString(")\n" + `module(load="imtcp")` + "\n")
	}
	fmt.Fprintf(&conf, "input(type=\"imtcp\" address=\"127.0.0.1\" port=\"%d\")\n", r.port)
	conf.WriteString(`template(name="kw" type="string" string="%pri%|%hostname%|%app-name%|%msgid%|%structured-data%|%msg%\n")` + "\n")
	fmt.Fprintf(&conf, "action(type=\"omfile\" file=%q template=\"kw\")\n", r.out)
	if err := os.WriteFile(r.conf, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(bin, "-n", "-f", r.conf, "-i", filepath.Join(dir, "rsyslogd.pid"))
	r.start(t)
	t.Cleanup(func() { r.kill(t) })
	return r
}

// start starts rsyslogd (again) on the same port and output file, and waits until it listens.
func (r *rsyslog) start(t *testing.T) {
	t.Helper()
	var logs bytes.Buffer
	cmd := exec.Command(r.cmd.Path, r.cmd.Args[1:]...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.cmd = cmd
	waitListening(t, "127.0.0.1:"+strconv.Itoa(r.port), "rsyslogd", &logs)
}

// kill ends rsyslogd at once, as a crash or an outage would.
func (r *rsyslog) kill(t *testing.T) {
	t.Helper()
	if r.cmd.ProcessState != nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	_ = r.cmd.Wait()
	os.Remove(filepath.Join(r.dir, "rsyslogd.pid"))
}

// syslogMessage is one message as rsyslog parsed and wrote it.
type syslogMessage struct {
	pri, hostname, app, msgid, msg string
	sdID                           string
	params                         map[string]string
}

// received parses everything rsyslog wrote so far.
func (r *rsyslog) received(t *testing.T) ([]syslogMessage, []byte) {
	t.Helper()
	raw, err := os.ReadFile(r.out)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []syslogMessage
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		f := strings.SplitN(line, "|", 5)
		if len(f) != 5 {
			t.Fatalf("rsyslog wrote %q", line)
		}
		m := syslogMessage{pri: f[0], hostname: f[1], app: f[2], msgid: f[3]}
		var rest string
		m.sdID, m.params, rest = parseSD(t, f[4])
		m.msg = strings.TrimPrefix(rest, "|")
		out = append(out, m)
	}
	return out, raw
}

// parseSD reads one RFC 5424 structured-data element: [ID name="value" ...], where a value
// escapes '"', '\' and ']' with a backslash. It returns what follows the element.
func parseSD(t *testing.T, s string) (id string, params map[string]string, rest string) {
	t.Helper()
	if !strings.HasPrefix(s, "[") {
		t.Fatalf("no structured data in %q", s)
	}
	i := 1
	for i < len(s) && s[i] != ' ' && s[i] != ']' {
		i++
	}
	id, params = s[1:i], map[string]string{}
	for i < len(s) && s[i] == ' ' {
		j := strings.IndexByte(s[i:], '=')
		if j < 0 || i+j+1 >= len(s) || s[i+j+1] != '"' {
			t.Fatalf("bad SD-PARAM at %d in %q", i, s)
		}
		name := s[i+1 : i+j]
		i += j + 2
		var v strings.Builder
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"\]`, s[i+1]) >= 0 {
				i++
			}
			v.WriteByte(s[i])
		}
		if i == len(s) {
			t.Fatalf("unterminated SD-PARAM %s in %q", name, s)
		}
		params[name] = v.String()
		i++
	}
	if i >= len(s) || s[i] != ']' {
		t.Fatalf("structured data not closed in %q", s)
	}
	return id, params, s[i+1:]
}

// exportedEvent is an event of the audit export (NDJSON), the reference the receivers' copies
// are held to.
type exportedEvent struct {
	Seq   int64  `json:"seq"`
	Time  string `json:"time"`
	Actor struct {
		Type, ID, Name string
	} `json:"actor"`
	Action    string `json:"action"`
	DeviceID  string `json:"deviceId"`
	KeyID     string `json:"keyId"`
	Source    string `json:"source"`
	Reason    string `json:"reason"`
	Outcome   string `json:"outcome"`
	IP        string `json:"ip"`
	UserAgent string `json:"userAgent"`
	Detail    string `json:"detail"`
	Ticket    string `json:"ticket"`
	Hash      string `json:"hash"`
}

// exportAudit returns the whole trail, oldest first, through the API's export.
func exportAudit(t *testing.T, url, admin string) []exportedEvent {
	t.Helper()
	b := mustCall(t, 200, "GET", url+"/api/devices/security/bitlocker/keys/audit?format=ndjson", admin, "")
	var out []exportedEvent
	for line := range bytes.SplitSeq(bytes.TrimSpace(b), []byte("\n")) {
		var e exportedEvent
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatal(err)
		}
		out = append([]exportedEvent{e}, out...) // the export is newest first
	}
	return out
}

// fields is an exported event as the syslog structured data names its fields.
func (e exportedEvent) fields() map[string]string {
	m := map[string]string{"seq": strconv.FormatInt(e.Seq, 10), "hash": e.Hash, "time": e.Time, "actorType": e.Actor.Type,
		"actorId": e.Actor.ID, "actorName": e.Actor.Name, "action": e.Action, "deviceId": e.DeviceID, "keyId": e.KeyID,
		"source": e.Source, "reason": e.Reason, "outcome": e.Outcome, "ip": e.IP, "userAgent": e.UserAgent, "detail": e.Detail, "ticket": e.Ticket}
	for k, v := range m {
		if v == "" {
			delete(m, k)
		}
	}
	return m
}

// waitFor polls cond until it holds or the time runs out.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// containsKey reports whether b holds the recovery password in any form a leak would take.
func containsKey(b []byte, password string) bool {
	for _, form := range []string{password, strings.ReplaceAll(password, "-", ""), password[:20]} {
		if bytes.Contains(b, []byte(form)) {
			return true
		}
	}
	return false
}

// quickDelivery shortens the runner's waits so that the tests see retries within seconds.
func quickDelivery(s *Server) {
	s.Delivery.Poll, s.Delivery.RetryMin = 50*time.Millisecond, 50*time.Millisecond
}

// TestSyslogDeliveryToRsyslog runs a server delivering to a real rsyslogd, plain and over TLS
// with a client certificate, requiring delivery before disclosure: every event arrives once, in
// order, with every field, across an rsyslog outage and a server restart; while rsyslog is down
// a view answers 503 without the key, and once it is back the view succeeds. No byte rsyslog
// received holds the key.
func TestSyslogDeliveryToRsyslog(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := "tcp"
		if useTLS {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			var ca *testCA
			env := map[string]string{"KEYWARD_AUDIT_REQUIRE_DELIVERY": "syslog", "KEYWARD_AUDIT_REQUIRE_DELIVERY_TIMEOUT": "2s",
				"KEYWARD_AUDIT_DELIVERY_RETRY_MAX": "300ms", "KEYWARD_AUDIT_SYSLOG_HOSTNAME": "kw-test", "KEYWARD_AUDIT_SYSLOG_FACILITY": "local4"}
			if useTLS {
				ca = newTestCA(t, t.TempDir())
				cert, key := ca.issue(t, "keyward-client", x509.ExtKeyUsageClientAuth)
				env["KEYWARD_AUDIT_SYSLOG_CA"], env["KEYWARD_AUDIT_SYSLOG_CERT"], env["KEYWARD_AUDIT_SYSLOG_KEY"] = ca.caFile, cert, key
			}
			rs := startRsyslog(t, ca)
			scheme := "tcp"
			if useTLS {
				scheme = "tls"
			}
			// The certificate names localhost and 127.0.0.1; the URL uses the name, so the
			// check of the server's name is exercised.
			host := "127.0.0.1"
			if useTLS {
				host = "localhost"
			}
			env["KEYWARD_AUDIT_SYSLOG"] = fmt.Sprintf("%s://%s:%d", scheme, host, rs.port)
			dir := t.TempDir()
			r := startWith(t, dir, env, quickDelivery)
			admin, deviceID, deviceToken, _ := setUp(t, r.URL(), dir)
			s := bitlockertest.Samples(t)[0]
			mustCall(t, 201, "PUT", r.URL()+"/api/agent/keys/"+s.KeyID, deviceToken, escrowJSON(s.Password))
			view := func() string {
				return r.URL() + "/api/devices/security/bitlocker/keys/" + deviceID + "?reason=locked+out&ticket=INC0001"
			}
			if b := mustCall(t, 200, "GET", view(), admin, ""); !bytes.Contains(b, []byte(s.Password)) {
				t.Fatalf("view with rsyslog up: %s", b)
			}
			delivered := func(url string) func() bool {
				return func() bool {
					got, _ := rs.received(t)
					return len(got) >= len(exportAudit(t, url, admin))
				}
			}
			waitFor(t, "the first events at rsyslog", 10*time.Second, delivered(r.URL()))

			// rsyslog goes away: the view that follows commits its key.read, waits, and answers
			// 503 without the key; the next is refused at once.
			rs.kill(t)
			for i, limit := range []time.Duration{10 * time.Second, time.Second} {
				began := time.Now()
				status, b := call(t, "GET", view(), admin, "")
				if status != 503 || containsKey(b, s.Password) {
					t.Fatalf("view %d with rsyslog down: %d %s", i, status, b)
				}
				if took := time.Since(began); took > limit {
					t.Fatalf("view %d with rsyslog down took %v", i, took)
				}
			}
			// The server restarts while rsyslog is still down; events keep being recorded.
			r.stop()
			r = startWith(t, dir, env, quickDelivery)
			mustCall(t, 200, "GET", r.URL()+"/api/devices/"+deviceID, admin, "")
			if status, b := call(t, "GET", view(), admin, ""); status != 503 || containsKey(b, s.Password) {
				t.Fatalf("view after the restart with rsyslog down: %d %s", status, b)
			}

			rs.start(t)
			waitFor(t, "the view to succeed with rsyslog back", 10*time.Second, func() bool {
				status, b := call(t, "GET", view(), admin, "")
				return status == 200 && bytes.Contains(b, []byte(s.Password))
			})
			waitFor(t, "every event at rsyslog", 10*time.Second, delivered(r.URL()))

			want := exportAudit(t, r.URL(), admin)
			got, raw := rs.received(t)
			if len(got) != len(want) {
				t.Fatalf("rsyslog received %d messages, the trail has %d events", len(got), len(want))
			}
			reads := 0
			for i, m := range got {
				w := want[i]
				if m.sdID != "keyward@32473" || m.app != "keyward" || m.hostname != "kw-test" || m.msgid != w.Action {
					t.Fatalf("message %d: %+v", i, m)
				}
				if wf := w.fields(); fmt.Sprint(m.params) != fmt.Sprint(wf) {
					t.Fatalf("message %d carries\n%v\nthe trail has\n%v", i, m.params, wf)
				}
				// local4 is facility 20; a key read is notice (5), a refusal warning (4).
				wantPri := map[string]string{"key.read/success": "165", "auth.token/denied": "164"}[w.Action+"/"+w.Outcome]
				if wantPri != "" && m.pri != wantPri {
					t.Fatalf("message %d (%s %s): PRI %s, want %s", i, w.Action, w.Outcome, m.pri, wantPri)
				}
				if w.Action == "key.read" && w.Outcome == "success" {
					reads++
				}
			}
			if reads < 3 {
				t.Fatalf("rsyslog received %d successful key.read events, want the 3 that passed the gate", reads)
			}
			t.Logf("rsyslog received %d events in order, %d of them successful key reads", len(got), reads)
			if containsKey(raw, s.Password) {
				t.Fatal("rsyslog received the recovery password")
			}
			if containsKey([]byte(r.logs.String()), s.Password) {
				t.Fatal("the server's log holds the recovery password")
			}
		})
	}
}

// webhookReceiver is a real HTTPS receiver that verifies each request's signature itself, as a
// receiver written from the README would, and keeps what it accepted.
type webhookReceiver struct {
	srv    *httptest.Server
	caFile string
	secret []byte

	mu       sync.Mutex
	refuse   bool     // answer 503 to everything
	lines    [][]byte // the NDJSON lines accepted, in order
	raw      []byte   // every byte of every body received
	refused  int
	badSigns int
}

func newWebhookReceiver(t *testing.T, secret []byte) *webhookReceiver {
	t.Helper()
	w := &webhookReceiver{secret: secret}
	w.srv = httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			rw.WriteHeader(400)
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		w.raw = append(w.raw, body...)
		var ts, sig string
		for part := range strings.SplitSeq(r.Header.Get("Keyward-Signature"), ",") {
			if v, ok := strings.CutPrefix(part, "t="); ok {
				ts = v
			}
			if v, ok := strings.CutPrefix(part, "v1="); ok {
				sig = v
			}
		}
		mac := hmac.New(sha256.New, w.secret)
		mac.Write([]byte(ts + "."))
		mac.Write(body)
		got, _ := hex.DecodeString(sig)
		sent, err := strconv.ParseInt(ts, 10, 64)
		if !hmac.Equal(got, mac.Sum(nil)) || err != nil || time.Since(time.Unix(sent, 0)).Abs() > 5*time.Minute {
			w.badSigns++
			rw.WriteHeader(401)
			return
		}
		if r.Method != "POST" || r.Header.Get("Content-Type") != "application/x-ndjson" {
			w.badSigns++
			rw.WriteHeader(415)
			return
		}
		if w.refuse {
			w.refused++
			rw.WriteHeader(503)
			return
		}
		for line := range bytes.SplitSeq(bytes.TrimSuffix(body, []byte("\n")), []byte("\n")) {
			w.lines = append(w.lines, line)
		}
		rw.WriteHeader(204)
	}))
	t.Cleanup(w.srv.Close)
	w.caFile = filepath.Join(t.TempDir(), "webhook-ca.pem")
	if err := os.WriteFile(w.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: w.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *webhookReceiver) setRefuse(refuse bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.refuse = refuse
}

// accepted returns the seq of each event accepted, in order, and the lines themselves.
func (w *webhookReceiver) accepted(t *testing.T) ([]int64, [][]byte) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	var seqs []int64
	for _, l := range w.lines {
		var e struct{ Seq int64 }
		if err := json.Unmarshal(l, &e); err != nil {
			t.Fatalf("webhook line %q: %v", l, err)
		}
		seqs = append(seqs, e.Seq)
	}
	return seqs, slices.Clone(w.lines)
}

func writeSecretFile(t *testing.T) (string, []byte) {
	t.Helper()
	secret := []byte(rand.Text() + rand.Text())
	f := filepath.Join(t.TempDir(), "webhook.secret")
	if err := os.WriteFile(f, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return f, secret
}

func scrape(t *testing.T, url, admin string) string {
	t.Helper()
	return string(mustCall(t, 200, "GET", url+"/metrics", admin, ""))
}

// TestWebhookDelivery delivers to a real HTTPS receiver that checks every signature: while it
// refuses, the lag grows and failures are counted; once it accepts, every event arrives once,
// in order, in the audit export's encoding, and the lag returns to 0. The key never travels.
func TestWebhookDelivery(t *testing.T) {
	secretFile, secret := writeSecretFile(t)
	recv := newWebhookReceiver(t, secret)
	recv.setRefuse(true)
	dir := t.TempDir()
	r := startWith(t, dir, map[string]string{"KEYWARD_AUDIT_WEBHOOK": recv.srv.URL + "/siem?token=receiver-secret",
		"KEYWARD_AUDIT_WEBHOOK_SECRET_FILE": secretFile, "KEYWARD_AUDIT_WEBHOOK_CA": recv.caFile,
		"KEYWARD_AUDIT_DELIVERY_RETRY_MAX": "200ms"}, quickDelivery)
	admin, deviceID, deviceToken, _ := setUp(t, r.URL(), dir)
	s := bitlockertest.Samples(t)[0]
	mustCall(t, 201, "PUT", r.URL()+"/api/agent/keys/"+s.KeyID, deviceToken, escrowJSON(s.Password))
	mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/"+deviceID+"?reason=locked+out&ticket=INC0002", admin, "")

	waitFor(t, "refused deliveries", 10*time.Second, func() bool {
		return counter(t, scrape(t, r.URL(), admin), `keyward_audit_delivery_failures_total{sink="webhook"}`) >= 2
	})
	m := scrape(t, r.URL(), admin)
	if lag := counter(t, m, `keyward_audit_delivery_lag_events{sink="webhook"}`); lag < 5 {
		t.Fatalf("lag %d events while the receiver refuses", lag)
	}
	if up := counter(t, m, `keyward_audit_delivery_up{sink="webhook"}`); up != 0 {
		t.Fatalf("webhook up %d while the receiver refuses", up)
	}
	time.Sleep(1100 * time.Millisecond) // the oldest undelivered event is now over a second old
	if age := counter(t, scrape(t, r.URL(), admin), `keyward_audit_delivery_lag_seconds{sink="webhook"}`); age < 1 {
		t.Fatalf("lag %d s while the receiver refuses", age)
	}

	recv.setRefuse(false)
	waitFor(t, "the lag to return to 0", 10*time.Second, func() bool {
		m := scrape(t, r.URL(), admin)
		return counter(t, m, `keyward_audit_delivery_lag_events{sink="webhook"}`) == 0 &&
			counter(t, m, `keyward_audit_delivery_lag_seconds{sink="webhook"}`) == 0
	})
	m = scrape(t, r.URL(), admin)
	want := mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/audit?format=ndjson", admin, "")
	wantLines := bytes.Split(bytes.TrimSpace(want), []byte("\n"))
	slices.Reverse(wantLines) // the export is newest first
	seqs, lines := recv.accepted(t)
	if len(lines) != len(wantLines) {
		t.Fatalf("the receiver accepted %d events (%v), the trail has %d", len(lines), seqs, len(wantLines))
	}
	for i := range lines {
		if seqs[i] != int64(i+1) || !bytes.Equal(lines[i], wantLines[i]) {
			t.Fatalf("event %d: received\n%s\nthe export has\n%s", i, lines[i], wantLines[i])
		}
	}
	if d := counter(t, m, `keyward_audit_delivered_total{sink="webhook"}`); d != int64(len(lines)) {
		t.Fatalf("delivered_total %d, the receiver accepted %d", d, len(lines))
	}
	if up := counter(t, m, `keyward_audit_delivery_up{sink="webhook"}`); up != 1 {
		t.Fatalf("webhook up %d once delivered", up)
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	if recv.badSigns != 0 || recv.refused < 2 {
		t.Fatalf("%d requests with a bad signature, %d refused", recv.badSigns, recv.refused)
	}
	if containsKey(recv.raw, s.Password) {
		t.Fatal("the webhook received the recovery password")
	}
	if strings.Contains(r.logs.String(), "receiver-secret") {
		t.Fatal("the log shows the webhook URL's query")
	}
}

// TestTwoServersDeliverEachEventOnce runs two servers on one PostgreSQL database delivering to
// one webhook: the lease lets one of them deliver, so each event arrives once and in order;
// when that server crashes, the other takes the sink over after the lease runs out and goes on
// from the stored cursor.
func TestTwoServersDeliverEachEventOnce(t *testing.T) {
	dbURL := pgDatabase(t)
	secretFile, secret := writeSecretFile(t)
	recv := newWebhookReceiver(t, secret)
	c := newCluster(t, dbURL, 2, "--audit-webhook", recv.srv.URL, "--audit-webhook-secret-file", secretFile,
		"--audit-webhook-ca", recv.caFile, "--audit-delivery-lease", "3s", "--audit-delivery-retry-max", "500ms")
	for i := range 6 {
		enrollAt(t, c.servers[i%2].url, c.admin, fmt.Sprintf("LT-%04d", i))
	}
	caughtUp := func(url string) func() bool {
		return func() bool {
			seqs, _ := recv.accepted(t)
			return len(seqs) >= len(exportAudit(t, url, c.admin))
		}
	}
	waitFor(t, "delivery of the first events", 15*time.Second, caughtUp(c.servers[1].url))

	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	holderPid := func() int {
		var holder string
		if err := db.QueryRow(`SELECT holder FROM delivery_cursors WHERE sink = 'webhook'`).Scan(&holder); err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(holder, "/")
		pid, err := strconv.Atoi(parts[len(parts)-2])
		if err != nil {
			t.Fatalf("holder %q", holder)
		}
		return pid
	}
	first := holderPid()
	var crashed, survivor *process
	for _, p := range c.servers {
		if p.cmd.Process.Pid == first {
			crashed = p
		} else {
			survivor = p
		}
	}
	if crashed == nil {
		t.Fatalf("the lease names pid %d, not one of the servers", first)
	}
	if err := crashed.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = crashed.cmd.Wait()
	for i := range 4 {
		enrollAt(t, survivor.url, c.admin, fmt.Sprintf("LT-1%03d", i))
	}
	waitFor(t, "the other server to take over", 15*time.Second, caughtUp(survivor.url))
	if got := holderPid(); got != survivor.cmd.Process.Pid {
		t.Fatalf("the lease names pid %d, want the surviving server %d", got, survivor.cmd.Process.Pid)
	}
	seqs, _ := recv.accepted(t)
	n := len(exportAudit(t, survivor.url, c.admin))
	if len(seqs) != n {
		t.Fatalf("the receiver accepted %d events for a trail of %d: %v", len(seqs), n, seqs)
	}
	for i, seq := range seqs {
		if seq != int64(i+1) {
			t.Fatalf("the receiver accepted seqs %v: want each of 1 to %d once, in order", seqs, n)
		}
	}
}

// TestAuditDeliveryFlags: settings that cannot work are refused at start, naming the flag.
func TestAuditDeliveryFlags(t *testing.T) {
	short := filepath.Join(t.TempDir(), "short.secret")
	if err := os.WriteFile(short, []byte("too short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--audit-delivery-start", "middle"}, "--audit-delivery-start"},
		{[]string{"--audit-delivery-lease", "1s"}, "--audit-delivery-lease"},
		{[]string{"--audit-webhook", "https://hooks.example.com/in"}, "--audit-webhook-secret-file"},
		{[]string{"--audit-webhook-secret-file", short}, "--audit-webhook-secret-file"},
		{[]string{"--audit-syslog-ca", "ca.pem"}, "need --audit-syslog"},
		{[]string{"--audit-require-delivery", "syslog"}, "needs --audit-syslog"},
		{[]string{"--audit-require-delivery", "email", "--audit-syslog", "tcp://127.0.0.1:514"}, "must be syslog or webhook"},
		{[]string{"--audit-require-delivery-timeout", "2m"}, "--audit-require-delivery-timeout"},
	} {
		err := NewServer().ParseFlags(tt.args, func(string) string { return "" })
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want an error naming %s", tt.args, err, tt.want)
		}
	}
	// Files and URLs are checked when the server opens: nothing starts with a sink that cannot work.
	for _, env := range []map[string]string{
		{"KEYWARD_AUDIT_SYSLOG": "udp://127.0.0.1:514"},
		{"KEYWARD_AUDIT_WEBHOOK": "http://hooks.example.com/in", "KEYWARD_AUDIT_WEBHOOK_SECRET_FILE": short},
		{"KEYWARD_AUDIT_WEBHOOK": "https://hooks.example.com/in", "KEYWARD_AUDIT_WEBHOOK_SECRET_FILE": short},
	} {
		env["KEYWARD_DATA_DIR"], env["KEYWARD_LISTEN"] = t.TempDir(), "127.0.0.1:0"
		s := NewServer()
		if err := s.ParseFlags(nil, func(k string) string { return env[k] }); err != nil {
			t.Fatal(err)
		}
		if err := s.Open(t.Context(), io.Discard); err == nil || !strings.Contains(err.Error(), "audit delivery") {
			s.Close()
			t.Errorf("%v: Open: %v", env, err)
		}
	}
}

// portalSession signs a person in to the portal and returns a client that keeps the session.
func portalSession(t *testing.T, base, email, password string) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.PostForm(base+"/signin", url.Values{"email": {email}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in of %s: %d", email, res.StatusCode)
	}
	return c
}

func postForm(t *testing.T, c *http.Client, u string, form url.Values) (int, []byte) {
	t.Helper()
	res, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, b
}

// TestPortalFailsClosed: the portal's view and self-service are held to the required receiver
// like the API: 503 without the key while the webhook refuses, the key once it accepts.
func TestPortalFailsClosed(t *testing.T) {
	secretFile, secret := writeSecretFile(t)
	recv := newWebhookReceiver(t, secret)
	recv.setRefuse(true)
	dir := t.TempDir()
	r := startWith(t, dir, map[string]string{"KEYWARD_AUDIT_WEBHOOK": recv.srv.URL, "KEYWARD_AUDIT_WEBHOOK_SECRET_FILE": secretFile,
		"KEYWARD_AUDIT_WEBHOOK_CA": recv.caFile, "KEYWARD_AUDIT_DELIVERY_RETRY_MAX": "200ms",
		"KEYWARD_AUDIT_REQUIRE_DELIVERY": "webhook", "KEYWARD_AUDIT_REQUIRE_DELIVERY_TIMEOUT": "1s"}, quickDelivery)
	_, deviceID, deviceToken, _ := setUp(t, r.URL(), dir)
	const pw = "a long sign-in password"
	for _, who := range []struct{ email, role string }{{"helpdesk@example.com", "helpdesk"}, {"alice@example.com", "user"}} {
		if code, _, stderr := cli(t, dir, pw+"\n", "users", "add", "--email", who.email, "--role", who.role, "--password-stdin"); code != 0 {
			t.Fatalf("users add %s: %s", who.email, stderr)
		}
	}
	s := bitlockertest.Samples(t)[0]
	mustCall(t, 201, "PUT", r.URL()+"/api/agent/keys/"+s.KeyID, deviceToken, escrowJSON(s.Password))
	helpdesk, alice := portalSession(t, r.URL(), "helpdesk@example.com", pw), portalSession(t, r.URL(), "alice@example.com", pw)
	views := map[string]func() (int, []byte){
		"portal view": func() (int, []byte) {
			return postForm(t, helpdesk, r.URL()+"/devices/"+deviceID+"/keys", url.Values{"reason": {"forgotten-pin"}})
		},
		"self-service": func() (int, []byte) {
			return postForm(t, alice, r.URL()+"/my/key", url.Values{"deviceId": {deviceID}, "reason": {"forgotten-pin"}})
		},
	}
	for name, view := range views {
		if status, b := view(); status != 503 || containsKey(b, s.Password) || !bytes.Contains(b, []byte("no key material was disclosed")) {
			t.Fatalf("%s with the webhook refusing: %d, key shown: %v", name, status, containsKey(b, s.Password))
		}
	}
	recv.setRefuse(false)
	for name, view := range views {
		waitFor(t, name+" to show the key", 10*time.Second, func() bool {
			status, b := view()
			return status == 200 && containsKey(b, s.Password)
		})
	}
}
