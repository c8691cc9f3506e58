package password_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/password"
)

func TestHashVerify(t *testing.T) {
	h, err := password.Hash("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=3,p=2$") || strings.Contains(h, "horse") {
		t.Fatalf("unexpected hash form %q", h)
	}
	if err := password.Verify("correct horse battery staple", h); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if err := password.Verify("correct horse battery stapler", h); !errors.Is(err, password.ErrMismatch) {
		t.Fatalf("wrong password: got %v, want ErrMismatch", err)
	}
	h2, _ := password.Hash("correct horse battery staple")
	if h2 == h {
		t.Fatal("two hashes of one password are equal: salt is not random")
	}
}

func TestHashRefusesShort(t *testing.T) {
	if _, err := password.Hash("short"); err == nil {
		t.Fatal("a 5-character password was accepted")
	}
}

func TestVerifyDamaged(t *testing.T) {
	for name, phc := range map[string]string{
		"empty":        "",
		"bcrypt":       "$2a$10$abcdefghijklmnopqrstuv",
		"bad params":   "$argon2id$v=19$m=0,t=0,p=0$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"huge memory":  "$argon2id$v=19$m=99999999,t=3,p=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"bad base64":   "$argon2id$v=19$m=65536,t=3,p=2$!!$!!",
		"old version":  "$argon2id$v=16$m=65536,t=3,p=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"short fields": "$argon2id$v=19$m=65536,t=3,p=2$c2E$aGE",
	} {
		t.Run(name, func(t *testing.T) {
			err := password.Verify("whatever password", phc)
			if err == nil || errors.Is(err, password.ErrMismatch) {
				t.Fatalf("got %v, want a damaged-hash error", err)
			}
		})
	}
}

// TestCheckerBoundsChecks starts more checks at once than a Checker runs and queues: the
// running and the queued ones answer, the rest are refused at once with ErrBusy.
func TestCheckerBoundsChecks(t *testing.T) {
	h, err := password.Hash("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	c := password.NewChecker(1, 1, time.Minute)
	const n = 6
	start := make(chan struct{})
	errs := make(chan error, n)
	for range n {
		go func() {
			<-start
			errs <- c.Verify(context.Background(), "correct horse battery staple", h)
		}()
	}
	close(start)
	var ok, busy int
	for range n {
		switch err := <-errs; {
		case err == nil:
			ok++
		case errors.Is(err, password.ErrBusy):
			busy++
		default:
			t.Fatalf("Verify: %v", err)
		}
	}
	if ok < 2 || busy == 0 || ok+busy != n {
		t.Fatalf("%d checked, %d refused as busy: want the running and the queued check to answer and the rest refused", ok, busy)
	}
	// Once the flood is over, the Checker takes checks again.
	if err := c.Verify(context.Background(), "wrong horse battery staple", h); !errors.Is(err, password.ErrMismatch) {
		t.Fatalf("after the flood: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Hash(ctx, "correct horse battery staple"); err != nil {
		t.Fatalf("a free slot is taken even with a done context (the check is short): %v", err)
	}
}
