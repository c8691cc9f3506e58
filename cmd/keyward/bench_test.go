package main

import (
	"crypto/rand"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/recovery"
)

// BenchmarkPostgres measures escrow and view throughput through real keyward processes on one
// PostgreSQL database, with one server and with two behind a client that alternates between
// them (what a round-robin load balancer does).
func BenchmarkPostgres(b *testing.B) {
	for _, servers := range []int{1, 2} {
		b.Run(fmt.Sprintf("escrow/servers=%d", servers), func(b *testing.B) {
			c := newCluster(b, pgDatabase(b), servers)
			_, token := enrollAt(b, c.servers[0].url, c.admin, "LT-BENCH")
			var n atomic.Int64
			b.SetParallelism(8) // 16 clients on two cores: enough to keep both servers busy
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					srv := c.servers[int(n.Add(1))%servers].url
					pw, _ := recovery.GeneratePassword(rand.Reader)
					if s, body := call(b, "PUT", srv+"/api/agent/keys/"+strings.ToUpper(uuid.NewString()), token, escrowJSON(pw)); s != 201 {
						b.Errorf("escrow: %d %s", s, body)
						return
					}
				}
			})
		})
		b.Run(fmt.Sprintf("view/servers=%d", servers), func(b *testing.B) {
			c := newCluster(b, pgDatabase(b), servers)
			id, token := enrollAt(b, c.servers[0].url, c.admin, "LT-BENCH")
			pw, _ := recovery.GeneratePassword(rand.Reader)
			mustCall(b, 201, "PUT", c.servers[0].url+"/api/agent/keys/"+strings.ToUpper(uuid.NewString()), token, escrowJSON(pw))
			var n atomic.Int64
			b.SetParallelism(8) // 16 clients on two cores: enough to keep both servers busy
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					srv := c.servers[int(n.Add(1))%servers].url
					if s, body := call(b, "GET", srv+"/api/devices/security/bitlocker/keys/"+id+"?reason=benchmark", c.admin, ""); s != 200 {
						b.Errorf("view: %d %s", s, body)
						return
					}
				}
			})
		})
	}
}
