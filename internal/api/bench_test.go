package api_test

import (
	"crypto/rand"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/recovery"
)

// BenchmarkEscrow measures escrow over HTTP end to end: each 201 means the key is sealed,
// committed with synchronous=FULL and its audit event chained.
func BenchmarkEscrow(b *testing.B) {
	e := newEnv(b)
	devices := make([]device, 8)
	for i := range devices {
		devices[i] = e.enroll("LT-"+string(rune('A'+i)), "")
	}
	next := make(chan device, len(devices))
	for _, d := range devices {
		next <- d
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		d := <-next
		for pb.Next() {
			pw, err := recovery.GeneratePassword(rand.Reader)
			if err != nil {
				b.Error(err)
				return
			}
			keyID := strings.ToUpper(uuid.NewString())
			if r := e.do("PUT", "/api/agent/keys/"+keyID, d.Token, escrowBody("C", pw)); r.status != 201 {
				b.Errorf("escrow: %d %s", r.status, r.body)
				return
			}
		}
	})
}

// BenchmarkView measures the per-device view: the disclosure with its key.read event, the
// access count and the automatic rotation request, all in one transaction.
func BenchmarkView(b *testing.B) {
	e := newEnv(b)
	d := e.enroll("LT-0042", "alice@example.com")
	pw, _ := recovery.GeneratePassword(rand.Reader)
	e.must(201, e.do("PUT", "/api/agent/keys/"+strings.ToUpper(uuid.NewString()), d.Token, escrowBody("C", pw)))
	path := "/api/devices/security/bitlocker/keys/" + d.ID + "?reason=benchmark"
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if r := e.do("GET", path, e.admin, nil); r.status != 200 {
				b.Errorf("view: %d %s", r.status, r.body)
				return
			}
		}
	})
}

// BenchmarkKeyList measures a page of 100 keys of the listing, with its key.list event and the
// lookup of other holders of each key ID (one in ten shared with a second device).
func BenchmarkKeyList(b *testing.B) {
	e := newEnv(b)
	devices := make([]device, 20)
	for i := range devices {
		devices[i] = e.enroll("LT-"+string(rune('A'+i)), "")
	}
	for i := range 500 {
		pw, _ := recovery.GeneratePassword(rand.Reader)
		keyID := strings.ToUpper(uuid.NewString())
		e.must(201, e.do("PUT", "/api/agent/keys/"+keyID, devices[i%len(devices)].Token, escrowBody("C", pw)))
		if i%10 == 0 {
			e.must(201, e.do("PUT", "/api/agent/keys/"+keyID, devices[(i+1)%len(devices)].Token, escrowBody("C", pw)))
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if r := e.do("GET", "/api/devices/security/bitlocker/keys?limit=100", e.admin, nil); r.status != 200 {
			b.Fatalf("list: %d %s", r.status, r.body)
		}
	}
}
