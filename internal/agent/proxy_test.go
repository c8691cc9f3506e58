package agent_test

import (
	"testing"

	"github.com/keyward/keyward/internal/agent"
)

// A Windows service has no proxy environment; the agent reads the WinHTTP default proxy in its
// own syntax: a proxy for HTTPS or one for every scheme, and a bypass list with <local> and
// wildcards.
func TestWinHTTPProxy(t *testing.T) {
	tests := []struct {
		name, proxy, bypass, host, want string // want: the proxy URL, "" for direct
	}{
		{"one proxy", "proxy.corp:8080", "", "keyward.example.com", "http://proxy.corp:8080"},
		{"per scheme", "http=p1:80;https=p2:3128", "", "keyward.example.com", "http://p2:3128"},
		{"http only", "http=p1:80", "", "keyward.example.com", ""},
		{"bypass wildcard", "p:80", "*.example.com;10.*", "keyward.example.com", ""},
		{"bypass address", "p:80", "*.example.com 10.*", "10.1.2.3", ""},
		{"not bypassed", "p:80", "*.example.com;10.*", "keyward.example.org", "http://p:80"},
		{"local names", "p:80", "<local>", "keyward", ""},
		{"local is not dotted names", "p:80", "<local>", "keyward.corp", "http://p:80"},
		{"no proxy", "", "", "keyward.example.com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := agent.ProxyFor(tt.proxy, tt.bypass, tt.host); got != tt.want {
				t.Fatalf("proxy %q, want %q", got, tt.want)
			}
		})
	}
}
