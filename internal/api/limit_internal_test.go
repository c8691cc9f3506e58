package api

import (
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
)

func TestFailureLimiter(t *testing.T) {
	clock := testkit.NewClock(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC))
	l := newFailureLimiter(3, time.Minute, 2, clock.Now)
	for i := 1; i <= 3; i++ {
		if n, wait := l.hit("a"); n != i || wait != 0 {
			t.Fatalf("hit %d: n=%d wait=%v, want n=%d and no wait", i, n, wait, i)
		}
	}
	clock.Advance(20 * time.Second)
	if n, wait := l.hit("a"); n != 4 || wait != 40*time.Second {
		t.Fatalf("past the limit: n=%d wait=%v, want 4 and 40s", n, wait)
	}
	if _, wait := l.hit("b"); wait != 0 {
		t.Fatal("another address is limited by the first one's failures")
	}
	// The table is full (2 addresses): a third address shares the overflow counter.
	for i := 1; i <= 4; i++ {
		n, _ := l.hit("c")
		if n != i {
			t.Fatalf("overflow hit %d: n=%d", i, n)
		}
	}
	if n, _ := l.hit("d"); n != 5 {
		t.Fatalf("a fourth address does not share the overflow counter: n=%d", n)
	}
	// A new window starts over, and ended windows are pruned to make room.
	clock.Advance(time.Minute)
	if n, wait := l.hit("a"); n != 1 || wait != 0 {
		t.Fatalf("new window: n=%d wait=%v, want 1 and no wait", n, wait)
	}
	if n, _ := l.hit("e"); n != 1 {
		t.Fatalf("after pruning, a new address gets its own counter: n=%d", n)
	}
}
