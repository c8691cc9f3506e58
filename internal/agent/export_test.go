package agent

import (
	"net/http"
	"net/url"
)

// What the external tests reach inside: the operating system's part of preparing the state
// directory, so that a refusal Windows alone can produce (another owner) is tested on Linux.
type (
	DirInfo = dirInfo
	DirOps  = dirOps
)

// PrepareStateDirWith prepares a state directory through ops.
var PrepareStateDirWith = prepareStateDirWith

// ProxyFor returns the proxy the WinHTTP settings choose for an HTTPS request to host: its URL,
// or "" for a direct connection.
func ProxyFor(proxy, bypass, host string) string {
	f := winHTTPProxy{Proxy: proxy, Bypass: bypass}.proxyFunc()
	if f == nil {
		return ""
	}
	u, err := f(&http.Request{URL: &url.URL{Scheme: "https", Host: host + ":443"}})
	if err != nil || u == nil {
		return ""
	}
	return u.String()
}
