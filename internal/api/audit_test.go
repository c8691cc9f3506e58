package api_test

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/bitlockertest"
	"github.com/keyward/keyward/internal/escrow"
)

func TestAuditEndpoint(t *testing.T) {
	e := newEnv(t)
	samples := bitlockertest.Samples(t)
	a, b := e.enroll("LT-A", "alice@example.com"), e.enroll("LT-B", "bob@example.com")
	e.must(201, e.do("PUT", "/api/agent/keys/"+samples[0].KeyID, a.Token, escrowBody("C", samples[0].Password)))
	e.must(201, e.do("PUT", "/api/agent/keys/"+samples[1].KeyID, b.Token, escrowBody("C", samples[1].Password)))
	e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/"+a.ID+"?reason=firmware+update", e.admin, nil))

	t.Run("filter by device and action", func(t *testing.T) {
		evs := e.auditEvents("deviceId=" + a.ID + "&action=key.escrow")
		if len(evs) != 1 || evs[0].DeviceID != a.ID || evs[0].Action != "key.escrow" || evs[0].KeyID != samples[0].KeyID || evs[0].Source != "agent" {
			t.Fatalf("events %+v", evs)
		}
		for _, ev := range e.auditEvents("deviceId=" + a.ID) {
			if ev.DeviceID != a.ID {
				t.Fatalf("device filter let through %+v", ev)
			}
		}
	})

	t.Run("newest first", func(t *testing.T) {
		evs := e.auditEvents("")
		for i := 1; i < len(evs); i++ {
			if evs[i-1].Seq <= evs[i].Seq {
				t.Fatalf("seq %d listed before %d", evs[i-1].Seq, evs[i].Seq)
			}
		}
	})

	t.Run("filter by actor, outcome, key", func(t *testing.T) {
		evs := e.auditEvents("actor=" + url.QueryEscape("admin@example.com") + "&outcome=success&keyId=" + strings.ToLower(samples[0].KeyID))
		if len(evs) != 1 || evs[0].Action != "key.read" {
			t.Fatalf("events %+v", evs)
		}
	})

	t.Run("csv", func(t *testing.T) {
		r := e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/audit?format=csv&deviceId="+a.ID, e.admin, nil))
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
			t.Fatalf("Content-Type %q", ct)
		}
		rows, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) < 2 || strings.Join(rows[0][:6], ",") != "seq,time,actorType,actorId,actorName,action" {
			t.Fatalf("csv %q", rows)
		}
		if len(rows)-1 != len(e.auditEvents("deviceId="+a.ID)) {
			t.Fatalf("csv has %d rows, json %d events", len(rows)-1, len(e.auditEvents("deviceId="+a.ID)))
		}
	})

	t.Run("ndjson", func(t *testing.T) {
		r := e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/audit?format=ndjson", e.admin, nil))
		sc := bufio.NewScanner(bytes.NewReader(r.body))
		n := 0
		for sc.Scan() {
			var rec auditRecord
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec.Seq == 0 {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			n++
		}
		if n < 6 {
			t.Fatalf("%d ndjson lines", n)
		}
	})

	t.Run("pages", func(t *testing.T) {
		all := e.auditEvents("")
		var seqs []int64
		cursor := ""
		for {
			var page struct {
				Items      []auditRecord
				NextCursor string
			}
			path := "/api/devices/security/bitlocker/keys/audit?limit=2"
			if cursor != "" {
				path += "&cursor=" + url.QueryEscape(cursor)
			}
			e.must(200, e.do("GET", path, e.admin, nil)).json(t, &page)
			for _, ev := range page.Items {
				seqs = append(seqs, ev.Seq)
			}
			if page.NextCursor == "" {
				break
			}
			cursor = page.NextCursor
		}
		// Reading pages adds no events (the audit read is not itself audited), so the pages
		// cover exactly what one big read saw.
		if len(seqs) != len(all) {
			t.Fatalf("pages gave %d events, one read %d", len(seqs), len(all))
		}
	})

	t.Run("who may read", func(t *testing.T) {
		e.must(200, e.do("GET", "/api/devices/security/bitlocker/keys/audit", e.person(escrow.RoleAuditor, "au@example.com"), nil))
		e.must(403, e.do("GET", "/api/devices/security/bitlocker/keys/audit", e.person(escrow.RoleHelpdesk, "hd@example.com"), nil))
		e.must(403, e.do("GET", "/api/devices/security/bitlocker/keys/audit", e.person(escrow.RoleUser, "alice@example.com"), nil))
	})

	t.Run("bad filters", func(t *testing.T) {
		for name, q := range map[string]string{
			"format":  "format=xml",
			"since":   "since=yesterday",
			"cursor":  "cursor=zzz",
			"unknown": "device=abc",
			"limit":   "limit=5000",
		} {
			r := e.must(400, e.do("GET", "/api/devices/security/bitlocker/keys/audit?"+q, e.admin, nil))
			field := strings.SplitN(q, "=", 2)[0]
			if !strings.Contains(r.errorMessage(t), field) {
				t.Errorf("%s: message %q does not name %s", name, r.errorMessage(t), field)
			}
		}
	})
}
