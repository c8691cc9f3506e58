package delivery

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/keyward/keyward/internal/escrow"
)

// Gate is the fail-closed setting: key material is handed out only once the key.read events of
// its disclosure were delivered to one required sink. This is Lithnet Access Manager's choice:
// the availability of a key is traded for the certainty that the SIEM saw that it was read.
//
// The cursor it watches is the one in the database, so with several servers a disclosure on one
// waits for the delivery made by whichever server holds the sink's lease.
type Gate struct {
	store   Store
	runner  *Runner
	sink    string
	timeout time.Duration
	poll    time.Duration
}

// NewGate returns a gate on sink, one of runner's sinks, that waits at most timeout for a
// delivery.
func NewGate(store Store, runner *Runner, sink string, timeout time.Duration) (*Gate, error) {
	if !slices.Contains(runner.Sinks(), sink) {
		return nil, fmt.Errorf("delivery: the required sink %q is not configured", sink)
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("delivery: the wait for the required sink must be positive")
	}
	return &Gate{store: store, runner: runner, sink: sink, timeout: timeout, poll: 100 * time.Millisecond}, nil
}

// Sink is the name of the required sink.
func (g *Gate) Sink() string { return g.sink }

// Ready refuses at once (CodeUnavailable) when the required sink is known to be down: its last
// delivery attempt, on whichever server delivers it, failed. Call it before a disclosure, so
// that nothing is disclosed or recorded that could not reach the SIEM.
func (g *Gate) Ready(ctx context.Context) error {
	if g.runner.failing(g.sink) {
		return g.down(nil)
	}
	st, err := g.state(ctx)
	if err != nil {
		return err
	}
	if !st.FailingSince.IsZero() {
		return g.down(nil)
	}
	return nil
}

// Delivered waits until the required sink has accepted the event at seq and every one before
// it, for at most the gate's timeout. It returns nil once delivered, and a CodeUnavailable
// error when the sink fails or the time runs out: the caller must then withhold the material.
func (g *Gate) Delivered(ctx context.Context, seq int64) error {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	g.runner.Wake()
	for {
		// Taken before the read, so a move between the read and the wait is not missed.
		moved := g.runner.movedChan()
		st, err := g.state(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return g.down(ctx.Err())
			}
			return err
		}
		if st.Cursor >= seq {
			return nil
		}
		if !st.FailingSince.IsZero() {
			return g.down(nil)
		}
		select {
		case <-ctx.Done():
			return g.down(ctx.Err())
		case <-moved:
		case <-time.After(g.poll):
		}
	}
}

func (g *Gate) state(ctx context.Context) (escrow.DeliveryState, error) {
	sts, err := g.store.DeliveryStates(ctx, []string{g.sink})
	if err != nil {
		return escrow.DeliveryState{}, err
	}
	return sts[0], nil
}

func (g *Gate) down(cause error) error {
	return escrow.Wrap(escrow.CodeUnavailable, cause, fmt.Sprintf(
		"the audit trail could not be delivered to the required receiver (%s), so no key material was disclosed; try again when it is back", g.sink))
}
