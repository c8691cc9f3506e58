package api

import (
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/keyward/keyward/internal/escrow"
)

// query reads a request's query parameters. Unknown parameters are refused: a misspelt filter
// that was silently ignored would answer with more than the caller asked for.
type query struct {
	values url.Values
	err    error
}

func newQuery(r *http.Request, allowed ...string) *query {
	q := &query{values: r.URL.Query()}
	known := map[string]bool{}
	for _, a := range allowed {
		known[a] = true
	}
	for name, vs := range q.values {
		switch {
		case !known[name]:
			q.fail(escrow.Errorf(escrow.CodeInvalid, "%s: unknown query parameter", cleanHeader(name, 64)))
		case len(vs) > 1:
			q.fail(escrow.Errorf(escrow.CodeInvalid, "%s: give it once", name))
		}
	}
	return q
}

func (q *query) fail(err error) {
	if q.err == nil {
		q.err = err
	}
}

func (q *query) str(name string, max int) string {
	v := q.values.Get(name)
	if err := escrow.CheckText(name, v, false, max); err != nil {
		q.fail(err)
		return ""
	}
	return v
}

// boolean reads a true/false parameter; absent is false.
func (q *query) boolean(name string) bool {
	switch q.values.Get(name) {
	case "", "false":
		return false
	case "true":
		return true
	}
	q.fail(escrow.Errorf(escrow.CodeInvalid, "%s: must be true or false", name))
	return false
}

// limit reads the page size: default 100, at most 1000.
func (q *query) limit(def int) int {
	v := q.values.Get("limit")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		q.fail(escrow.Errorf(escrow.CodeInvalid, "limit: must be a number from 1 to 1000"))
		return def
	}
	return n
}

func (q *query) time(name string) time.Time {
	v := q.values.Get(name)
	if v == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		q.fail(escrow.Errorf(escrow.CodeInvalid, "%s: must be an RFC 3339 time like 2026-01-02T15:04:05Z", name))
	}
	return t
}

func (q *query) deviceID(name string) string {
	v := q.values.Get(name)
	if v == "" {
		return ""
	}
	id, err := parseDeviceID(v)
	if err != nil {
		q.fail(err)
	}
	return id
}

// parseDeviceID checks a device ID's shape before it reaches storage.
func parseDeviceID(s string) (string, error) {
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return "", escrow.Errorf(escrow.CodeInvalid, "deviceId: must be a device ID (a UUID)")
	}
	return id.String(), nil
}
