package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/recovery"
)

// fsyncRate measures how many times a second the disk under dir completes a small append
// followed by fsync, one after the other: what a commit costs when every commit waits for its
// own fsync, the ceiling of a server without group commit.
func fsyncRate(dir string, d time.Duration) (float64, error) {
	f, err := os.CreateTemp(dir, "fsync-*.tmp")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	n, start := 0, time.Now()
	for time.Since(start) < d {
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
		if err := f.Sync(); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// loadResult is what one load of one kind of request gave.
type loadResult struct {
	ok        int
	failed    int
	firstErr  error
	elapsed   time.Duration
	latencies []time.Duration
}

// load runs req from clients goroutines for d; req gets the client's own random source. Each
// client finishes the request it has started when the time is up: a request cut off would be
// neither a success nor a failure of the server.
func load(ctx context.Context, clients int, d time.Duration, req func(ctx context.Context, rng *mrand.Rand) error) loadResult {
	var mu sync.Mutex
	var res loadResult
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for c := range clients {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(c), uint64(start.UnixNano())))
			var lat []time.Duration
			ok, failed := 0, 0
			var firstErr error
			for ctx.Err() == nil && time.Now().Before(end) {
				t := time.Now()
				err := req(ctx, rng)
				if ctx.Err() != nil {
					break // interrupted: not counted
				}
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				ok++
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			defer mu.Unlock()
			res.ok, res.failed = res.ok+ok, res.failed+failed
			res.latencies = append(res.latencies, lat...)
			if res.firstErr == nil {
				res.firstErr = firstErr
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	slices.Sort(res.latencies)
	return res
}

func (r loadResult) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[min(len(r.latencies)-1, int(p*float64(len(r.latencies))))]
}

var counterLine = regexp.MustCompile(`(?m)^(keyward_store_commits_total|keyward_store_writes_total) (\S+)$`)

// errNoWriteCounts: the server does not count its commits (a version from before group
// commit, measured for comparison).
var errNoWriteCounts = errors.New("/metrics has no keyward_store_commits_total and keyward_store_writes_total")

// writeCounts reads the server's commits and acknowledged writes from /metrics.
func writeCounts(ctx context.Context, h *client) (commits, writes float64, err error) {
	_, b, err := h.get(ctx, "/metrics", false)
	if err != nil {
		return 0, 0, err
	}
	found := 0
	for _, m := range counterLine.FindAllStringSubmatch(string(b), -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return 0, 0, err
		}
		if m[1] == "keyward_store_commits_total" {
			commits = v
		} else {
			writes = v
		}
		found++
	}
	if found != 2 {
		return 0, 0, errNoWriteCounts
	}
	return commits, writes, nil
}

func runLoads(ctx context.Context, out io.Writer, h *client, bf benchFile, clients int, d time.Duration, fsyncs float64) error {
	// Escrows go to one half of the sample and views to the other: the keys an escrow adds
	// would otherwise make every later view of the device, in this run and the next, longer.
	var reported, withKey []sampledDevice
	for i, s := range bf.Sample {
		if s.VolumeID != "" && i%2 == 0 {
			reported = append(reported, s)
		}
		if s.KeyID != "" && i%2 == 1 {
			withKey = append(withKey, s)
		}
	}
	if len(reported) == 0 || len(withKey) == 0 {
		return errors.New("the sample has no device with a volume and a key")
	}
	loads := []struct {
		name string
		req  func(ctx context.Context, rng *mrand.Rand) error
	}{
		{"escrow (PUT /api/agent/keys/{keyId}, new key)", func(ctx context.Context, rng *mrand.Rand) error {
			dev := reported[rng.IntN(len(reported))]
			pw, err := recovery.GeneratePassword(rand.Reader)
			if err != nil {
				return err
			}
			body := fmt.Sprintf(`{"volumeId":%q,"mountPoint":"C:","volumeType":"operatingSystem","kind":"recoveryPassword","recoveryPassword":%q}`, dev.VolumeID, pw)
			_, _, err = h.do(ctx, "PUT", "/api/agent/keys/"+strings.ToUpper(uuid.NewString()), dev.Token, body, false)
			return err
		}},
		{"view of a device's keys (audited)", func(ctx context.Context, rng *mrand.Rand) error {
			dev := withKey[rng.IntN(len(withKey))]
			_, _, err := h.get(ctx, "/api/devices/security/bitlocker/keys/"+dev.ID+"?reason=load+test", false)
			return err
		}},
	}
	fmt.Fprintf(out, "HTTP load, %d clients, %s each:\n", clients, d)
	for _, l := range loads {
		c0, w0, err := writeCounts(ctx, h)
		counted := !errors.Is(err, errNoWriteCounts)
		if err != nil && counted {
			return err
		}
		r := load(ctx, clients, d, l.req)
		if err := ctx.Err(); err != nil {
			return err
		}
		perWrite := "commits not counted by this server"
		if counted {
			c1, w1, err := writeCounts(ctx, h)
			if err != nil {
				return err
			}
			if w1 > w0 {
				perWrite = fmt.Sprintf("%.3f commits/write", (c1-c0)/(w1-w0))
			}
		}
		rate := float64(r.ok) / r.elapsed.Seconds()
		fmt.Fprintf(out, "  %-48s %8s/s  %5.2fx fsync  p50 %s  p99 %s  %s\n",
			l.name, count(int(rate)), rate/fsyncs, ms(r.percentile(0.50)), ms(r.percentile(0.99)), perWrite)
		if r.failed > 0 {
			fmt.Fprintf(out, "    %d requests failed; the first: %v\n", r.failed, r.firstErr)
		}
	}
	return nil
}
