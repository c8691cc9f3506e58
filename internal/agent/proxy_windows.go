//go:build windows

package agent

import (
	"net/http"
	"net/url"
	"unsafe"

	"golang.org/x/sys/windows"
)

var (
	winhttp                                 = windows.NewLazySystemDLL("winhttp.dll")
	procWinHttpGetDefaultProxyConfiguration = winhttp.NewProc("WinHttpGetDefaultProxyConfiguration")
	procGlobalFree                          = windows.NewLazySystemDLL("kernel32.dll").NewProc("GlobalFree")
)

// winhttpProxyInfo is WINHTTP_PROXY_INFO.
type winhttpProxyInfo struct {
	accessType  uint32
	proxy       *uint16
	proxyBypass *uint16
}

const winhttpAccessTypeNamedProxy = 3

// systemProxy is the proxy of a service: the WinHTTP default proxy (netsh winhttp set proxy, or
// Group Policy), which the environment of a service never holds; then the environment.
func systemProxy() func(*http.Request) (*url.URL, error) {
	var info winhttpProxyInfo
	if ok, _, _ := procWinHttpGetDefaultProxyConfiguration.Call(uintptr(unsafe.Pointer(&info))); ok != 0 {
		p := winHTTPProxy{Proxy: windows.UTF16PtrToString(info.proxy), Bypass: windows.UTF16PtrToString(info.proxyBypass)}
		if info.proxy != nil {
			procGlobalFree.Call(uintptr(unsafe.Pointer(info.proxy)))
		}
		if info.proxyBypass != nil {
			procGlobalFree.Call(uintptr(unsafe.Pointer(info.proxyBypass)))
		}
		if info.accessType == winhttpAccessTypeNamedProxy {
			if f := p.proxyFunc(); f != nil {
				return f
			}
		}
	}
	return http.ProxyFromEnvironment
}
