package agent_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/agent"
	"github.com/keyward/keyward/internal/agent/agenttest"
	"github.com/keyward/keyward/internal/agent/bitlocker"
	"github.com/keyward/keyward/internal/agent/bitlocker/bitlockersim"
)

func TestBackoffDelay(t *testing.T) {
	b := agent.Backoff{Base: 10 * time.Second, Max: 15 * time.Minute}
	for attempt := range 70 {
		step := b.Max
		if attempt < 7 {
			step = min(b.Base<<attempt, b.Max) // 10s·2^7 > 15m
		}
		for _, f := range []float64{0, 0.25, 0.5, 0.999999} {
			d := b.Delay(attempt, f)
			if d < step/2 || d > step {
				t.Fatalf("Delay(%d, %v) = %v, want within [%v, %v]", attempt, f, d, step/2, step)
			}
		}
		if b.Delay(attempt, 0) == b.Delay(attempt, 0.999999) {
			t.Fatalf("Delay(%d) has no jitter", attempt)
		}
	}
	if d := b.Delay(0, 0); d != 5*time.Second {
		t.Fatalf("first delay without jitter %v, want 5s", d)
	}
}

func TestJitter(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for range 10000 {
		d := agent.Jitter(90*time.Minute, 0.1, rnd.Float64())
		if d < 81*time.Minute || d > 99*time.Minute {
			t.Fatalf("Jitter = %v, want within 90m ± 10%%", d)
		}
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo > 82*time.Minute || hi < 98*time.Minute {
		t.Fatalf("jitter spans only [%v, %v] of [81m, 99m]", lo, hi)
	}
}

var errEnough = errors.New("enough")

// Run, with the clock injected: retries with growing, jittered waits while the server fails,
// then reports every 90 minutes ± 10%, polls in between, and reports a change at the next poll.
func TestRunBacksOffThenReportsPeriodically(t *testing.T) {
	srv := agenttest.StartServer(t)
	r := newRig(t, srv, 400)
	r.sampleVolumes()
	r.proxy.FailAll(agenttest.Fail503)
	r.cfg.Backoff = agent.Backoff{Base: 10 * time.Second, Max: 15 * time.Minute}

	const failures = 9
	var waits []time.Duration
	var reportTimes []time.Time
	reports := 0
	var handAdded string
	r.cfg.Sleep = func(ctx context.Context, d time.Duration) error {
		waits = append(waits, d)
		// The clock moves only here, so a report accepted since the last wait was made now.
		if n := countAccepted(r.proxy, "/api/agent/report"); n > reports {
			reports = n
			reportTimes = append(reportTimes, r.clock.Now())
		}
		if len(waits) == failures {
			r.proxy.FailAll(agenttest.Pass)
		}
		if len(reportTimes) == 3 && handAdded == "" {
			// An administrator adds a recovery password by hand at the machine.
			handAdded = r.sim.AddProtectorByHand("D:", bitlockersim.ProtectorSpec{Type: bitlocker.RecoveryPassword, Password: agenttest.Passwords(t)[5]})
		}
		if len(reportTimes) == 7 {
			return errEnough
		}
		r.clock.Advance(d)
		return nil
	}
	r.start()
	if err := r.a.Run(context.Background()); !errors.Is(err, errEnough) {
		t.Fatalf("Run returned %v", err)
	}

	for i, d := range waits[:failures] {
		step := min(r.cfg.Backoff.Base<<min(i, 20), r.cfg.Backoff.Max)
		if d < step/2 || d > step {
			t.Errorf("wait %d after a failure: %v, want within [%v, %v]", i, d, step/2, step)
		}
	}
	// Reports: the first at recovery, periodic ones every 81-99 minutes, and the hand-added
	// protector reported at the next poll (within 5 minutes), out of turn.
	var failed int
	for _, q := range r.proxy.Requests() {
		if q.Failure == agenttest.Fail503 {
			failed++
		}
	}
	if failed != failures {
		t.Fatalf("%d failed requests, want %d (one per cycle)", failed, failures)
	}
	var periodic []time.Duration
	for i := 1; i < len(reportTimes); i++ {
		gap := reportTimes[i].Sub(reportTimes[i-1])
		if gap <= 5*time.Minute {
			continue // the change, reported at the next poll
		}
		periodic = append(periodic, gap)
		if gap < 81*time.Minute || gap > 99*time.Minute {
			t.Errorf("report gap %v, want 90 minutes ± 10%%", gap)
		}
	}
	if len(periodic) < 4 {
		t.Fatalf("report gaps %v", periodic)
	}
	for _, d := range waits[failures:] {
		if d > agent.DefaultPollInterval {
			t.Fatalf("an idle wait of %v, longer than the poll interval", d)
		}
	}
	k := srv.Keys(r.deviceID)[handAdded]
	if k.Status != "active" || k.Verification != "verified" {
		t.Fatalf("the protector added by hand: %+v", k)
	}
	r.noMaterialAnywhere()
}

// countAccepted counts the POSTs to path the server answered 200.
func countAccepted(p *agenttest.Proxy, path string) int {
	n := 0
	for _, q := range p.Requests() {
		if q.Method == "POST" && q.Path == path && q.Status == 200 {
			n++
		}
	}
	return n
}
