package notify

import (
	"bytes"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"text/template"
	"time"
	"unicode"

	"github.com/keyward/keyward/internal/escrow"
)

// The emails' templates, one file per kind, each defining KIND.subject and KIND.body.
//
//go:embed templates/*.txt
var templateFiles embed.FS

// The emails.
const (
	kindOwner    = "owner"    // to a device's owner: someone else viewed its keys
	kindRequest  = "request"  // to an approver: someone asks to view a device's keys
	kindDecision = "decision" // to a requester: their request was approved or denied
)

// parseTemplates parses every template once, at start; a missing one is an error naming it, so
// that a server never starts unable to send one of its emails.
func parseTemplates(files fs.FS) (*template.Template, error) {
	t, err := template.New("").Option("missingkey=error").ParseFS(files, "templates/*.txt")
	if err != nil {
		return nil, fmt.Errorf("email templates: %w", err)
	}
	for _, kind := range []string{kindOwner, kindRequest, kindDecision} {
		for _, part := range []string{".subject", ".body"} {
			if t.Lookup(kind+part) == nil {
				return nil, fmt.Errorf("email templates: %s%s is missing", kind, part)
			}
		}
	}
	return t, nil
}

// message is one email to one recipient, before it is encoded.
type message struct {
	kind string
	to   string // a plainAddress
	data any    // the template's data: every string in it went through text
}

// text makes a value from the trail or the store safe for an email: control and format
// characters (CR and LF among them) are escaped, so that no value can end a header, start a
// new one or fake a line of the body. Line and paragraph separators, which CleanText keeps,
// are escaped too: a mail reader may break the line there.
func text(s string) string {
	s = escrow.CleanText(s)
	if !strings.ContainsAny(s, "\u2028\u2029") {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.In(r, unicode.Zl, unicode.Zp) {
			fmt.Fprintf(&b, "\\u{%X}", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// render encodes the message: RFC 5322 headers built only from checked addresses and
// RFC 2047-encoded text, and a UTF-8 text/plain body in quoted-printable.
func (n *Notifier) render(m message, now time.Time, id string) ([]byte, error) {
	var subject, body bytes.Buffer
	if err := n.templates.ExecuteTemplate(&subject, m.kind+".subject", m.data); err != nil {
		return nil, err
	}
	if err := n.templates.ExecuteTemplate(&body, m.kind+".body", m.data); err != nil {
		return nil, err
	}
	if !plainAddress(m.to) {
		return nil, fmt.Errorf("recipient %q is not an address", text(m.to))
	}
	var b bytes.Buffer
	header := func(name, value string) { fmt.Fprintf(&b, "%s: %s\r\n", name, value) }
	header("Date", now.Format(time.RFC1123Z))
	header("From", n.mail.from.String())
	header("To", (&mail.Address{Address: m.to}).String())
	header("Subject", mime.QEncoding.Encode("utf-8", oneLine(subject.String())))
	_, domain, _ := strings.Cut(n.mail.from.Address, "@")
	header("Message-ID", "<"+id+"@"+domain+">")
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "quoted-printable")
	// RFC 3834: an automatic message, which out-of-office replies leave alone.
	header("Auto-Submitted", "auto-generated")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	if _, err := io.WriteString(qp, strings.ReplaceAll(body.String(), "\r\n", "\n")); err != nil {
		return nil, err
	}
	if err := qp.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// oneLine joins the lines of a rendered subject and turns any other control character into a
// space: the subject is one header line whatever the template or the values hold.
func oneLine(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r)
	}), " ")
}
