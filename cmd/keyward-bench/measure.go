package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/password"
	"github.com/keyward/keyward/internal/store"
)

func runMeasure(ctx context.Context, args []string, out io.Writer) error {
	var c common
	fs := flag.NewFlagSet("measure", flag.ContinueOnError)
	c.flags(fs)
	runs := fs.Int("runs", 21, "runs of each operation (fewer for one that takes more than 20 s in all)")
	clients := fs.Int("clients", 32, "concurrent clients of the HTTP load")
	duration := fs.Duration("duration", 10*time.Second, "how long each load (escrow, view) runs")
	binary := fs.String("server-binary", "", "the keyward binary to start (default: built from this module with go build)")
	if err := parseFlags(fs, args, &c); err != nil {
		return err
	}
	if *runs <= 0 || *clients <= 0 || *duration <= 0 {
		return usageError{"measure: --runs, --clients and --duration must be positive"}
	}
	bf, err := readBenchFile(c.dataDir)
	if err != nil {
		return err
	}
	if len(bf.Sample) == 0 {
		return fmt.Errorf("no seeded fleet in %s: run keyward-bench seed first", c.dataDir)
	}

	// Credentials for this run: an admin with an API token and a password for the portal.
	db, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	creds, err := newCredentials(ctx, db)
	if err != nil {
		return err
	}

	if *binary == "" {
		if *binary, err = buildServer(ctx); err != nil {
			return err
		}
		defer os.RemoveAll(filepath.Dir(*binary))
	}
	srv, err := startServer(ctx, *binary, c)
	if err != nil {
		return err
	}
	defer srv.stop()

	dialect := "SQLite"
	if c.databaseURL != "" {
		dialect = "PostgreSQL"
	}
	fmt.Fprintf(out, "keyward-bench: %s devices on %s, %d-run medians, server %s (pid %d)\n\n",
		count(bf.Devices), dialect, *runs, srv.url, srv.cmd.Process.Pid)
	h := newHTTP(srv.url, *clients)
	if err := h.signIn(ctx, creds); err != nil {
		return err
	}
	if err := measureOperations(ctx, out, h, db, bf, *runs); err != nil {
		return err
	}
	fmt.Fprintln(out)
	fsyncs, err := fsyncRate(c.dataDir, 2*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "serial fsync rate of %s: %s/s\n\n", c.dataDir, count(int(fsyncs)))
	if err := runLoads(ctx, out, h, bf, *clients, *duration, fsyncs); err != nil {
		return err
	}
	if rss, peak, err := srv.memory(); err == nil {
		fmt.Fprintf(out, "\nserver RSS %s, peak %s\n", rss, peak)
	}
	return nil
}

// credentials are an admin's, made for one run of measure.
type credentials struct {
	email, password string
	token           string
}

func newCredentials(ctx context.Context, db *store.DB) (credentials, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return credentials{}, err
	}
	c := credentials{email: fmt.Sprintf("bench-%x@example.com", b), password: fmt.Sprintf("bench-%x-password", b)}
	hash, err := password.Hash(c.password)
	if err != nil {
		return c, err
	}
	o := escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorSystem, ID: "keyward-bench", Name: "keyward-bench"}, Source: escrow.SourceCLI}
	if _, err := db.CreateUser(ctx, o, escrow.NewUser{Email: c.email, Role: escrow.RoleAdmin, PasswordHash: hash}); err != nil {
		return c, err
	}
	tok, err := db.CreateAPIToken(ctx, o, c.email, "keyward-bench")
	if err != nil {
		return c, err
	}
	c.token = tok.String()
	return c, nil
}

// server is the keyward binary serving the benchmark's installation.
type server struct {
	cmd  *exec.Cmd
	url  string
	done chan error
}

// buildServer builds the keyward binary of this module into a temporary directory.
func buildServer(ctx context.Context) (string, error) {
	dir, err := os.MkdirTemp("", "keyward-bench-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "keyward")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/keyward/keyward/cmd/keyward").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("building keyward (or give --server-binary): %v\n%s", err, out)
	}
	return bin, nil
}

func startServer(ctx context.Context, bin string, c common) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	args := []string{"serve", "--data-dir", c.dataDir, "--listen", addr, "--log-level", "warn"}
	if c.databaseURL != "" {
		args = append(args, "--database-url", c.databaseURL)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, url: "http://" + addr, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	for deadline := time.Now().Add(60 * time.Second); ; {
		res, err := http.Get(s.url + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return s, nil
			}
		}
		select {
		case err := <-s.done:
			return nil, fmt.Errorf("keyward serve ended: %v", err)
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, errors.New("keyward serve did not become healthy in 60 s")
		}
	}
}

func (s *server) stop() {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// memory returns the server's resident set size and its peak, from /proc (Linux).
func (s *server) memory() (rss, peak string, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		switch k {
		case "VmRSS":
			rss = strings.TrimSpace(v)
		case "VmHWM":
			peak = strings.TrimSpace(v)
		}
	}
	if rss == "" {
		return "", "", errors.New("no VmRSS")
	}
	return rss, peak, sc.Err()
}

// client is an HTTP client of the server: the API with the admin's token, the portal with a
// session.
type client struct {
	base   string
	token  string
	http   *http.Client
	portal *http.Client
}

func newHTTP(base string, conns int) *client {
	tr := &http.Transport{MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, IdleConnTimeout: time.Minute}
	jar, _ := cookiejar.New(nil)
	return &client{
		base: base,
		http: &http.Client{Transport: tr, Timeout: 10 * time.Minute},
		portal: &http.Client{Transport: tr, Timeout: 10 * time.Minute, Jar: jar,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

func (c *client) signIn(ctx context.Context, cr credentials) error {
	c.token = cr.token
	form := url.Values{"email": {cr.email}, "password": {cr.password}}
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+"/signin", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := c.portal.Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther {
		return fmt.Errorf("portal sign-in: %s", res.Status)
	}
	return nil
}

// get fetches path with the admin's token (or, for the portal, its session) and returns the
// body's length, reading all of it.
func (c *client) get(ctx context.Context, path string, portal bool) (int64, []byte, error) {
	return c.do(ctx, "GET", path, "", "", portal)
}

func (c *client) do(ctx context.Context, method, path, token, body string, portal bool) (int64, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	hc := c.http
	if portal {
		hc = c.portal
	} else {
		if token == "" {
			token = c.token
		}
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	// Small answers are kept for the caller; large ones (a CSV of the fleet) only counted.
	var keep strings.Builder
	n, err := io.Copy(&limitedBuilder{b: &keep, left: 1 << 20}, res.Body)
	if err != nil {
		return n, nil, err
	}
	if res.StatusCode >= 300 {
		return n, nil, fmt.Errorf("%s %s: %s %.200s", method, strings.SplitN(path, "?", 2)[0], res.Status, keep.String())
	}
	return n, []byte(keep.String()), nil
}

// limitedBuilder keeps the first left bytes written to it and counts the rest.
type limitedBuilder struct {
	b    *strings.Builder
	left int
}

func (l *limitedBuilder) Write(p []byte) (int, error) {
	if l.left > 0 {
		k := min(l.left, len(p))
		l.b.Write(p[:k])
		l.left -= k
	}
	return len(p), nil
}

// operation is one request path that is timed.
type operation struct {
	name string
	// run performs it once, on the i-th of the sampled targets, and returns how many devices
	// (or rows) it delivered, for those whose speed is a rate.
	run func(ctx context.Context, i int) (int, error)
	// rate names what run counts: "" for an operation timed by its latency alone.
	rate string
}

func measureOperations(ctx context.Context, out io.Writer, h *client, db *store.DB, bf benchFile, runs int) error {
	rng := mrand.New(mrand.NewPCG(bf.Seed, 7))
	// Views go to the half of the sample the escrow load leaves alone (runLoads).
	viewed := map[string]bool{}
	for i, d := range bf.Sample {
		viewed[d.ID] = i%2 == 1
	}
	pick := func(ok func(sampledDevice) bool) []sampledDevice {
		var s []sampledDevice
		for _, d := range bf.Sample {
			if ok(d) {
				s = append(s, d)
			}
		}
		rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
		if len(s) == 0 {
			s = bf.Sample
		}
		return s
	}
	all := pick(func(sampledDevice) bool { return true })
	withKey := pick(func(d sampledDevice) bool { return d.KeyID != "" && viewed[d.ID] })
	withOwner := pick(func(d sampledDevice) bool { return d.Owner != "" })
	var secondPage string
	listJSON := func(path string) (int, string, error) {
		_, b, err := h.get(ctx, path, false)
		if err != nil {
			return 0, "", err
		}
		var page struct {
			Items      []json.RawMessage `json:"items"`
			NextCursor string            `json:"nextCursor"`
		}
		if err := json.Unmarshal(b, &page); err != nil {
			return 0, "", fmt.Errorf("%s: %w", path, err)
		}
		return len(page.Items), page.NextCursor, nil
	}
	ops := []operation{
		{name: "device list page (GET /api/devices?limit=100)", run: func(ctx context.Context, i int) (int, error) {
			n, next, err := listJSON("/api/devices?limit=100")
			secondPage = next
			return n, err
		}},
		{name: "device list, next page", run: func(ctx context.Context, i int) (int, error) {
			if secondPage == "" {
				return 0, nil
			}
			n, _, err := listJSON("/api/devices?limit=100&cursor=" + url.QueryEscape(secondPage))
			return n, err
		}},
		{name: "status-filtered page (escrowStatus=failed)", run: func(ctx context.Context, i int) (int, error) {
			n, _, err := listJSON("/api/devices?limit=100&escrowStatus=failed")
			return n, err
		}},
		{name: "device details (GET /api/devices/{id})", run: func(ctx context.Context, i int) (int, error) {
			_, _, err := h.get(ctx, "/api/devices/"+all[i%len(all)].ID, false)
			return 1, err
		}},
		{name: "view of a device's keys (audited)", run: func(ctx context.Context, i int) (int, error) {
			_, _, err := h.get(ctx, "/api/devices/security/bitlocker/keys/"+withKey[i%len(withKey)].ID+"?reason=benchmark", false)
			return 1, err
		}},
		{name: "key-ID lookup (8 characters)", run: func(ctx context.Context, i int) (int, error) {
			n, _, err := listJSON("/api/devices/security/bitlocker/keys?keyId=" + withKey[i%len(withKey)].KeyID[:8])
			return n, err
		}},
		{name: "audit page (100 events)", run: func(ctx context.Context, i int) (int, error) {
			n, _, err := listJSON("/api/devices/security/bitlocker/keys/audit?limit=100")
			return n, err
		}},
		{name: "portal device search (owner)", run: func(ctx context.Context, i int) (int, error) {
			owner, _, _ := strings.Cut(withOwner[i%len(withOwner)].Owner, "@")
			_, _, err := h.get(ctx, "/devices?q="+url.QueryEscape(owner), true)
			return 1, err
		}},
		{name: "escrow report summary (counts, first page)", run: func(ctx context.Context, i int) (int, error) {
			_, _, err := h.get(ctx, "/api/reports/escrow?limit=100", false)
			return 1, err
		}},
		{name: "escrow report, full JSON", run: func(ctx context.Context, i int) (int, error) {
			_, _, err := h.get(ctx, "/api/reports/escrow", false)
			return bf.Devices, err
		}, rate: "devices"},
		{name: "escrow report, full CSV", run: func(ctx context.Context, i int) (int, error) {
			_, _, err := h.get(ctx, "/api/reports/escrow?format=csv", false)
			return bf.Devices, err
		}, rate: "devices"},
		{name: "census (store.Census, behind /metrics)", run: func(ctx context.Context, i int) (int, error) {
			_, err := db.Census(ctx)
			return bf.Devices, err
		}, rate: "devices"},
	}
	fmt.Fprintf(out, "%-50s %12s %12s %6s\n", "operation", "median", "max", "runs")
	for _, op := range ops {
		var took []time.Duration
		var total time.Duration
		var delivered int
		for i := 0; i < runs && (i < 3 || total < 20*time.Second); i++ {
			start := time.Now()
			n, err := op.run(ctx, i)
			d := time.Since(start)
			if err != nil {
				return fmt.Errorf("%s: %w", op.name, err)
			}
			took, total, delivered = append(took, d), total+d, n
		}
		slices.Sort(took)
		med := took[len(took)/2]
		line := fmt.Sprintf("%-50s %12s %12s %6d", op.name, ms(med), ms(took[len(took)-1]), len(took))
		if op.rate != "" && med > 0 {
			line += fmt.Sprintf("  (%s %s/s)", count(int(float64(delivered)/med.Seconds())), op.rate)
		}
		fmt.Fprintln(out, line)
	}
	return nil
}
