package password_test

import (
	"errors"
	"strings"
	"testing"

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
