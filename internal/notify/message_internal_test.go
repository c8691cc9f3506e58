package notify

import (
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// A template missing from the files stops the start, naming it.
func TestMissingTemplateStopsStart(t *testing.T) {
	for _, drop := range []string{"templates/owner.txt", "templates/request.txt", "templates/decision.txt"} {
		files := fstest.MapFS{}
		err := fs.WalkDir(templateFiles, "templates", func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || path == drop {
				return err
			}
			b, err := fs.ReadFile(templateFiles, path)
			files[path] = &fstest.MapFile{Data: b}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		kind := strings.TrimSuffix(strings.TrimPrefix(drop, "templates/"), ".txt")
		if _, err := parseTemplates(files); err == nil || !strings.Contains(err.Error(), kind+".subject is missing") {
			t.Errorf("without %s: %v, want an error naming %s.subject", drop, err, kind)
		}
	}
	if _, err := parseTemplates(templateFiles); err != nil {
		t.Fatal(err)
	}
}

// The ticket line is there exactly when the event has a ticket.
func TestTicketLine(t *testing.T) {
	n, err := New(Config{SMTP: SMTP{Server: "mail.example.com:587", From: "keyward@example.com"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{kindOwner, kindRequest, kindDecision} {
		for _, ticket := range []string{"", "INC0012345"} {
			msg, err := n.render(message{kind: kind, to: "alice@example.com", data: emailData{Device: "LT-1", Ticket: ticket}}, time.Now(), "id")
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(string(msg), "Ticket:  INC0012345"); got != (ticket != "") {
				t.Errorf("%s email with ticket %q: ticket line %v\n%s", kind, ticket, got, msg)
			}
		}
	}
}

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"a\r\nb":                             "a b",
		"  tabs\tand\vfeeds ":                "tabs and feeds",
		"nel\u0085ls\u2028ps\u2029rtl\u202e": "nel ls ps rtl",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}
