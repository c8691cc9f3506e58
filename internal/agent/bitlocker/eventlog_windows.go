//go:build windows

package bitlocker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/windows"
)

// A small binding of the Windows Event Log API (wevtapi.dll): a query, read forward from a
// bookmark, each event rendered as XML (ParseEventXML reads it), the bookmark moved to the last
// event read and rendered for the state file.
var (
	wevtapi               = windows.NewLazySystemDLL("wevtapi.dll")
	procEvtQuery          = wevtapi.NewProc("EvtQuery")
	procEvtNext           = wevtapi.NewProc("EvtNext")
	procEvtRender         = wevtapi.NewProc("EvtRender")
	procEvtClose          = wevtapi.NewProc("EvtClose")
	procEvtCreateBookmark = wevtapi.NewProc("EvtCreateBookmark")
	procEvtUpdateBookmark = wevtapi.NewProc("EvtUpdateBookmark")
	procEvtSeek           = wevtapi.NewProc("EvtSeek")
)

const (
	evtQueryChannelPath       = 0x1
	evtQueryForwardDirection  = 0x100
	evtSeekRelativeToBookmark = 0x4
	evtRenderEventXML         = 1
	evtRenderBookmark         = 2
	evtNextBatch              = 32
	evtNextTimeout            = 10_000 // milliseconds per batch

	errorNoMoreItems         = windows.Errno(259)
	errorInsufficientBuffer  = windows.Errno(122)
	errorEvtChannelNotFound  = windows.Errno(15007)
	errorEvtQueryResultStale = windows.Errno(15011)
)

// WindowsEventLog is the event log of the running Windows system.
type WindowsEventLog struct{}

var _ EventLog = WindowsEventLog{}

type evtHandle uintptr

func evtClose(h evtHandle) {
	if h != 0 {
		procEvtClose.Call(uintptr(h))
	}
}

// xpath is the query for events of a provider with one of ids.
func xpath(provider string, ids []int) string {
	var b strings.Builder
	b.WriteString("*[System[")
	if provider != "" {
		b.WriteString("Provider[@Name='" + provider + "'] and ")
	}
	b.WriteString("(")
	for i, id := range ids {
		if i > 0 {
			b.WriteString(" or ")
		}
		b.WriteString("EventID=" + strconv.Itoa(id))
	}
	b.WriteString(")]]")
	return b.String()
}

// Events implements EventLog. A log that does not exist (the BitLocker Management log of a
// system without BitLocker) has no events; any other failure, access denied included, is an
// error, so a log the agent cannot read is never taken for a log without recoveries.
func (WindowsEventLog) Events(ctx context.Context, log, provider string, ids []int, bookmark string) ([]LogEvent, string, error) {
	logp, err := windows.UTF16PtrFromString(log)
	if err != nil {
		return nil, bookmark, err
	}
	qp, err := windows.UTF16PtrFromString(xpath(provider, ids))
	if err != nil {
		return nil, bookmark, err
	}
	r, _, callErr := procEvtQuery.Call(0, uintptr(unsafe.Pointer(logp)), uintptr(unsafe.Pointer(qp)), evtQueryChannelPath|evtQueryForwardDirection)
	q := evtHandle(r)
	if q == 0 {
		if errors.Is(callErr, errorEvtChannelNotFound) {
			return nil, bookmark, nil
		}
		return nil, bookmark, fmt.Errorf("EvtQuery: %w", callErr)
	}
	defer evtClose(q)

	var bm evtHandle
	if bookmark != "" {
		bp, err := windows.UTF16PtrFromString(bookmark)
		if err != nil {
			return nil, bookmark, err
		}
		r, _, callErr := procEvtCreateBookmark.Call(uintptr(unsafe.Pointer(bp)))
		if bm = evtHandle(r); bm == 0 {
			return nil, bookmark, fmt.Errorf("EvtCreateBookmark: %w", callErr)
		}
		// Not strict: when the bookmarked event is gone (the log was cleared or wrapped), reading
		// goes on from the next event there is rather than failing for ever.
		if ok, _, callErr := procEvtSeek.Call(uintptr(q), 1, uintptr(bm), 0, evtSeekRelativeToBookmark); ok == 0 {
			return nil, bookmark, fmt.Errorf("EvtSeek: %w", callErr)
		}
	} else {
		r, _, callErr := procEvtCreateBookmark.Call(0)
		if bm = evtHandle(r); bm == 0 {
			return nil, bookmark, fmt.Errorf("EvtCreateBookmark: %w", callErr)
		}
	}
	defer evtClose(bm)

	var out []LogEvent
	moved := false
	for ctx.Err() == nil {
		var hs [evtNextBatch]evtHandle
		var n uint32
		ok, _, callErr := procEvtNext.Call(uintptr(q), evtNextBatch, uintptr(unsafe.Pointer(&hs[0])), evtNextTimeout, 0, uintptr(unsafe.Pointer(&n)))
		if ok == 0 {
			if errors.Is(callErr, errorNoMoreItems) {
				break
			}
			if errors.Is(callErr, errorEvtQueryResultStale) {
				break // the log wrapped under the query; the rest is read next time from the bookmark
			}
			return nil, bookmark, fmt.Errorf("EvtNext: %w", callErr)
		}
		var batchErr error
		for _, h := range hs[:n] {
			if batchErr == nil {
				var xml []byte
				if xml, batchErr = render(h, evtRenderEventXML); batchErr == nil {
					e, perr := ParseEventXML(xml)
					if perr == nil {
						out = append(out, e)
					}
					// An event that does not parse is skipped, not read again and again.
					if ok, _, callErr := procEvtUpdateBookmark.Call(uintptr(bm), uintptr(h)); ok == 0 {
						batchErr = fmt.Errorf("EvtUpdateBookmark: %w", callErr)
					} else {
						moved = true
					}
				}
			}
			evtClose(h)
		}
		if batchErr != nil {
			return nil, bookmark, batchErr
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, bookmark, err
	}
	if !moved {
		// Nothing read: the bookmark stays (an empty one is the start of the log again, never
		// a rendered empty bookmark, which EvtSeek could not use).
		return out, bookmark, nil
	}
	b, err := render(bm, evtRenderBookmark)
	if err != nil {
		return nil, bookmark, err
	}
	return out, string(b), nil
}

// render renders an event or a bookmark as XML, converted from UTF-16 to UTF-8.
func render(h evtHandle, flags uint32) ([]byte, error) {
	var used, props uint32
	ok, _, callErr := procEvtRender.Call(0, uintptr(h), uintptr(flags), 0, 0, uintptr(unsafe.Pointer(&used)), uintptr(unsafe.Pointer(&props)))
	if ok == 0 && !errors.Is(callErr, errorInsufficientBuffer) {
		return nil, fmt.Errorf("EvtRender: %w", callErr)
	}
	if used == 0 {
		return nil, errors.New("EvtRender: empty")
	}
	buf := make([]uint16, (used+1)/2)
	ok, _, callErr = procEvtRender.Call(0, uintptr(h), uintptr(flags), uintptr(len(buf)*2), uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&used)), uintptr(unsafe.Pointer(&props)))
	if ok == 0 {
		return nil, fmt.Errorf("EvtRender: %w", callErr)
	}
	return []byte(windows.UTF16ToString(buf)), nil
}
