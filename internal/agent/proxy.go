package agent

import (
	"net"
	"net/http"
	"net/url"
	"strings"
)

// winHTTPProxy is the machine's WinHTTP default proxy (netsh winhttp set proxy), which is what a
// Windows service has instead of a user's proxy environment: a proxy list and a bypass list in
// WinHTTP's syntax.
type winHTTPProxy struct {
	Proxy  string // "host:port", or "http=host:port;https=host:port", several separated by ; or space
	Bypass string // "<local>;*.example.com;10.*", separated by ; or space
}

// proxyFunc returns the proxy function for http.Transport: for an HTTPS request (the agent sends
// nothing else off the loopback), the https= entry or the first entry without a scheme, unless
// the host is in the bypass list. No proxy at all is nil.
func (p winHTTPProxy) proxyFunc() func(*http.Request) (*url.URL, error) {
	proxy := pickProxy(p.Proxy)
	if proxy == nil {
		return nil
	}
	bypass := strings.FieldsFunc(p.Bypass, func(r rune) bool { return r == ';' || r == ' ' })
	return func(r *http.Request) (*url.URL, error) {
		host := r.URL.Hostname()
		for _, b := range bypass {
			if bypassed(host, b) {
				return nil, nil
			}
		}
		return proxy, nil
	}
}

func pickProxy(list string) *url.URL {
	var plain, https string
	for _, e := range strings.FieldsFunc(list, func(r rune) bool { return r == ';' || r == ' ' }) {
		scheme, addr, ok := strings.Cut(e, "=")
		switch {
		case !ok && plain == "":
			plain = e
		case ok && strings.EqualFold(scheme, "https") && https == "":
			https = addr
		}
	}
	addr := https
	if addr == "" {
		addr = plain
	}
	if addr == "" {
		return nil
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return nil
	}
	return u
}

// bypassed matches a host against one WinHTTP bypass entry: <local> is any name without a dot
// (and the loopback), * is a wildcard.
func bypassed(host, entry string) bool {
	if strings.EqualFold(entry, "<local>") {
		ip := net.ParseIP(host)
		return !strings.Contains(host, ".") && ip == nil || ip != nil && ip.IsLoopback() || strings.EqualFold(host, "localhost")
	}
	entry = strings.ToLower(strings.TrimPrefix(strings.TrimPrefix(entry, "http://"), "https://"))
	if h, _, err := net.SplitHostPort(entry); err == nil {
		entry = h
	}
	return wildcard(entry, strings.ToLower(host))
}

// wildcard matches s against a pattern in which * stands for any run of characters.
func wildcard(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}
