package audit

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/keyward/keyward/internal/escrow"
)

// The export formats.
const (
	FormatJSON   = "json"   // {"items":[...],"nextCursor":"..."}
	FormatNDJSON = "ndjson" // one Record per line
	FormatCSV    = "csv"    // header row, then one row per event
)

// ParseFormat returns the export format named by s, as found in a query parameter or a flag:
// "" means FormatJSON and case does not matter. An unknown name is a CodeInvalid
// *escrow.Error whose message lists the allowed values.
func ParseFormat(s string) (string, error) {
	switch f := strings.ToLower(strings.TrimSpace(s)); f {
	case "":
		return FormatJSON, nil
	case FormatJSON, FormatNDJSON, FormatCSV:
		return f, nil
	}
	return "", escrow.Errorf(escrow.CodeInvalid, "unknown audit export format %q; allowed values are json, ndjson, csv", s)
}

// ContentType returns the media type of format. A name ParseFormat rejects gets
// application/octet-stream, which at least promises nothing about the body.
func ContentType(format string) string {
	f, err := ParseFormat(format)
	if err != nil {
		return "application/octet-stream"
	}
	switch f {
	case FormatNDJSON:
		return "application/x-ndjson"
	case FormatCSV:
		return "text/csv; charset=utf-8"
	}
	return "application/json"
}

// Writer streams audit events in one export format. It holds at most one encoded event, so an
// export of any length runs in constant memory and reaches the client as it is produced.
// After an error from the underlying writer every later call returns that error, because the
// document is already damaged. A Writer is not safe for concurrent use.
type Writer interface {
	Write(e escrow.AuditEvent) error
	// Close ends the document. For JSON, nextCursor (if non-empty) is written as the
	// "nextCursor" member after "items"; NDJSON and CSV ignore it. It does not close the
	// underlying writer.
	Close(nextCursor string) error
}

// NewWriter returns a Writer of format (as accepted by ParseFormat) onto w. If w has a
// Flush method (http.Flusher, or Flush() error as bufio.Writer has), it is called every
// flushEvery events and at Close, so that a long export streams instead of piling up in a
// response buffer.
func NewWriter(format string, w io.Writer) (Writer, error) {
	f, err := ParseFormat(format)
	if err != nil {
		return nil, err
	}
	s := stream{w: w}
	switch f {
	case FormatNDJSON:
		return &ndjsonWriter{stream: s}, nil
	case FormatCSV:
		c := &csvWriter{stream: s}
		c.csv = csv.NewWriter(&c.row)
		return c, nil
	}
	return &jsonWriter{stream: s}, nil
}

// flushEvery trades a little throughput (each flush is a chunk on the wire) for latency.
const flushEvery = 64

var errClosed = errors.New("audit: writer is closed")

// stream is what the three writers share: one Write to w per event, the periodic flush, and
// the sticky error.
type stream struct {
	w      io.Writer
	buf    []byte // the event being written, reused to spare an allocation per event
	events int
	err    error
	closed bool
}

func (s *stream) check() error {
	if s.err != nil {
		return s.err
	}
	if s.closed {
		return errClosed
	}
	return nil
}

// emit writes b as one event (or, with event false, as framing).
func (s *stream) emit(b []byte, event bool) error {
	if _, err := s.w.Write(b); err != nil {
		s.err = err
		return err
	}
	if event {
		s.events++
		if s.events%flushEvery == 0 {
			return s.flush()
		}
	}
	return nil
}

func (s *stream) flush() error {
	switch f := s.w.(type) {
	case interface{ Flush() error }:
		if err := f.Flush(); err != nil {
			s.err = err
			return err
		}
	case interface{ Flush() }:
		f.Flush()
	}
	return nil
}

// finish is the common tail of Close.
func (s *stream) finish(tail []byte) error {
	if err := s.check(); err != nil {
		return err
	}
	s.closed = true
	if len(tail) > 0 {
		if err := s.emit(tail, false); err != nil {
			return err
		}
	}
	return s.flush()
}

func encodeRecord(b []byte, e escrow.AuditEvent) []byte {
	// A Record holds only strings and an integer, so marshalling cannot fail.
	j, _ := json.Marshal(ToRecord(e))
	return append(b, j...)
}

type jsonWriter struct{ stream }

const jsonHead = `{"items":[`

func (j *jsonWriter) Write(e escrow.AuditEvent) error {
	if err := j.check(); err != nil {
		return err
	}
	b := j.buf[:0]
	if j.events == 0 {
		b = append(b, jsonHead...)
	} else {
		b = append(b, ',')
	}
	j.buf = encodeRecord(b, e)
	return j.emit(j.buf, true)
}

func (j *jsonWriter) Close(nextCursor string) error {
	if err := j.check(); err != nil {
		return err
	}
	var b []byte
	if j.events == 0 {
		b = append(b, jsonHead...)
	}
	b = append(b, ']')
	if nextCursor != "" {
		b = append(b, `,"nextCursor":`...)
		b = appendJSONString(b, nextCursor)
	}
	b = append(b, "}\n"...)
	return j.finish(b)
}

func appendJSONString(b []byte, s string) []byte {
	// Marshalling a string cannot fail.
	q, _ := json.Marshal(s)
	return append(b, q...)
}

type ndjsonWriter struct{ stream }

func (n *ndjsonWriter) Write(e escrow.AuditEvent) error {
	if err := n.check(); err != nil {
		return err
	}
	n.buf = append(encodeRecord(n.buf[:0], e), '\n')
	return n.emit(n.buf, true)
}

func (n *ndjsonWriter) Close(string) error { return n.finish(nil) }

// csvHeader names the columns; they follow the canonical encoding's order, then the hash.
var csvHeader = []string{"seq", "time", "actorType", "actorId", "actorName", "action", "deviceId",
	"keyId", "source", "reason", "outcome", "ip", "userAgent", "detail", "ticket", "hash"}

type csvWriter struct {
	stream
	row    bytes.Buffer // csv.Writer's output for one event, so each event is one Write to w
	csv    *csv.Writer
	header bool
}

func (c *csvWriter) Write(e escrow.AuditEvent) error {
	if err := c.check(); err != nil {
		return err
	}
	c.row.Reset()
	c.writeHeader()
	r := ToRecord(e)
	c.csv.Write([]string{
		strconv.FormatInt(r.Seq, 10),
		r.Time,
		defuse(r.Actor.Type),
		defuse(r.Actor.ID),
		defuse(r.Actor.Name),
		defuse(r.Action),
		defuse(r.DeviceID),
		defuse(r.KeyID),
		defuse(r.Source),
		defuse(r.Reason),
		defuse(r.Outcome),
		defuse(r.IP),
		defuse(r.UserAgent),
		defuse(r.Detail),
		defuse(r.Ticket),
		r.Hash,
	})
	c.csv.Flush()
	return c.emit(c.row.Bytes(), true)
}

// writeHeader puts the header into c.row once; the csv.Writer's errors are not checked
// because it can only fail when its destination does, and a bytes.Buffer does not.
func (c *csvWriter) writeHeader() {
	if !c.header {
		c.csv.Write(csvHeader)
		c.header = true
	}
}

func (c *csvWriter) Close(string) error {
	if err := c.check(); err != nil {
		return err
	}
	c.row.Reset()
	c.writeHeader()
	c.csv.Flush()
	return c.finish(c.row.Bytes())
}

// defuse stops a spreadsheet from executing a cell as a formula (CSV injection): audit fields
// carry text from users, tokens and device agents, and the export is opened by auditors in
// Excel. A leading quote makes the cell text, and a reader sees that it was added.
func defuse(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}
