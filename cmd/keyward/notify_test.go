package main

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/keyward/keyward/internal/notify/smtptest"
	"github.com/keyward/keyward/internal/recovery"
	"github.com/keyward/keyward/internal/testkit"
)

func TestEmailFlags(t *testing.T) {
	base := []string{"--smtp-server", "mail.example.com:587", "--smtp-from", "Keyward <keyward@example.com>"}
	tests := []struct {
		name string
		args []string
		want string // "" when accepted
	}{
		{"off", nil, ""},
		{"on", base, ""},
		{"with authentication", append(base, "--smtp-username", "keyward", "--smtp-password-file", "/etc/keyward/smtp-password"), ""},
		{"implicit TLS", append(base, "--smtp-tls", "tls"), ""},
		{"relay without TLS", append(base, "--smtp-tls", "none"), ""},
		{"zone", append(base, "--notify-timezone", "Europe/Paris", "--notify-owners=false"), ""},
		{"sender without server", []string{"--smtp-from", "keyward@example.com"}, "need --smtp-server"},
		{"CA without server", []string{"--smtp-ca", "ca.pem"}, "need --smtp-server"},
		{"server without sender", []string{"--smtp-server", "mail.example.com:587"}, "needs --smtp-from"},
		{"unknown TLS mode", append(base, "--smtp-tls", "ssl"), "must be starttls, tls or none"},
		{"password in the clear", append(base, "--smtp-tls", "none", "--smtp-username", "u", "--smtp-password-file", "p"), "in the clear"},
		{"username without password", append(base, "--smtp-username", "u"), "both --smtp-username and --smtp-password-file"},
		{"password without username", append(base, "--smtp-password-file", "p"), "both --smtp-username and --smtp-password-file"},
		{"no password flag", append(base, "--smtp-password", "p"), "not defined"},
		{"zero timeout", append(base, "--smtp-timeout", "0s"), "--smtp-timeout"},
		{"unknown zone", append(base, "--notify-timezone", "Mars/Olympus"), "not a time zone"},
		{"zero age", append(base, "--notify-max-age", "0s"), "--notify-max-age"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := NewServer().ParseFlags(tc.args, func(string) string { return "" })
			if tc.want == "" && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
	s := NewServer()
	if err := s.ParseFlags(nil, func(k string) string {
		return map[string]string{"KEYWARD_SMTP_SERVER": "mail.example.com:465", "KEYWARD_SMTP_TLS": "tls", "KEYWARD_SMTP_FROM": "k@example.com"}[k]
	}); err != nil || s.Email.Server != "mail.example.com:465" || s.Email.TLS != "tls" || !s.Email.Owners {
		t.Fatalf("from the environment: %+v, %v", s.Email, err)
	}
}

// serve builds the email sink at start from the flags and files, and refuses to start when
// they are wrong.
func TestServeEmailSink(t *testing.T) {
	files := t.TempDir()
	caFile, _, _ := testkit.NewCA(t).Write(t, files)
	passwordFile := filepath.Join(files, "smtp-password")
	if err := os.WriteFile(passwordFile, []byte("s3cret-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	openFile := filepath.Join(files, "smtp-password-for-all")
	if err := os.WriteFile(openFile, []byte("s3cret-pass\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(files, "empty")
	if err := os.WriteFile(emptyFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KEYWARD_SMTP_SERVER": "127.0.0.1:1", "KEYWARD_SMTP_FROM": "Keyward <keyward@example.com>",
		"KEYWARD_SMTP_USERNAME": "keyward", "KEYWARD_SMTP_PASSWORD_FILE": passwordFile, "KEYWARD_SMTP_CA": caFile,
		"KEYWARD_PUBLIC_URL": "https://keyward.example.com"}
	r := start(t, t.TempDir(), env)
	if r.notifier == nil || r.notifier.Name() != "email" {
		t.Fatalf("no email sink: %v", r.notifier)
	}
	if strings.Contains(r.logs.String(), "s3cret-pass") {
		t.Error("the SMTP password is in the logs")
	}
	if off := start(t, t.TempDir(), nil); off.notifier != nil {
		t.Error("an email sink without --smtp-server")
	}

	for _, tc := range []struct {
		name   string
		change map[string]string
		want   string
	}{
		{"missing password file", map[string]string{"KEYWARD_SMTP_PASSWORD_FILE": filepath.Join(files, "nope")}, "no such file"},
		{"empty password file", map[string]string{"KEYWARD_SMTP_PASSWORD_FILE": emptyFile}, "is empty"},
		{"password file for all", map[string]string{"KEYWARD_SMTP_PASSWORD_FILE": openFile}, "run chmod 640"},
		{"CA file without PEM", map[string]string{"KEYWARD_SMTP_CA": passwordFile}, "no PEM certificate"},
		{"sender not an address", map[string]string{"KEYWARD_SMTP_FROM": "keyward"}, "smtp from"},
	} {
		name, change := tc.name, tc.change
		t.Run(name, func(t *testing.T) {
			bad := map[string]string{"KEYWARD_DATA_DIR": t.TempDir(), "KEYWARD_LISTEN": "127.0.0.1:0"}
			for k, v := range env {
				bad[k] = v
			}
			for k, v := range change {
				bad[k] = v
			}
			s := NewServer()
			if err := s.ParseFlags(nil, func(k string) string { return bad[k] }); err != nil {
				t.Fatal(err)
			}
			err := s.Open(context.Background(), &testkit.Buffer{})
			if err == nil {
				s.Close()
				t.Fatal("the server started")
			}
			if !strings.Contains(err.Error(), "email") || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret-pass") {
				t.Errorf("error %q: want it to name the email settings and say %q, never the password", err, tc.want)
			}
		})
	}
}

// keyward serve with the --smtp-* settings of a real mail server: a helpdesk view through the
// HTTP API reaches the device's owner by email, from the trail, over STARTTLS with AUTH, and
// the email holds no key material.
func TestServeEmailsOwner(t *testing.T) {
	mail := smtptest.Start(t, nil)
	files := t.TempDir()
	caFile, passwordFile := filepath.Join(files, "ca.pem"), filepath.Join(files, "smtp-password")
	if err := os.WriteFile(caFile, mail.CA.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passwordFile, []byte(mail.Pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// A view made before email is turned on is not news when it is: the email sink starts
	// with the events after it.
	before := start(t, dir, nil)
	_, deviceID, deviceToken, _ := setUp(t, before.URL(), dir)
	password, err := recovery.GeneratePassword(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mustCall(t, 201, "PUT", before.URL()+"/api/agent/keys/"+strings.ToUpper(uuid.NewString()), deviceToken, escrowJSON(password))
	run := cliRunner(t, dir)
	run(0, "users", "add", "--email", "bob@example.com", "--role", "helpdesk")
	helpdesk := strings.TrimSpace(run(0, "tokens", "create", "--user", "bob@example.com", "--name", "desk"))
	mustCall(t, 200, "GET", before.URL()+"/api/devices/security/bitlocker/keys/"+deviceID+"?reason=before+email", helpdesk, "")
	before.stop()

	r := start(t, dir, map[string]string{"KEYWARD_SMTP_SERVER": mail.Addr, "KEYWARD_SMTP_FROM": "Keyward <keyward@example.com>",
		"KEYWARD_SMTP_USERNAME": mail.User, "KEYWARD_SMTP_PASSWORD_FILE": passwordFile, "KEYWARD_SMTP_CA": caFile,
		"KEYWARD_PUBLIC_URL": "https://keyward.example.com", "KEYWARD_NOTIFY_TIMEZONE": "UTC"})
	body := mustCall(t, 200, "GET", r.URL()+"/api/devices/security/bitlocker/keys/"+deviceID+"?reason=locked+out&ticket=INC0012345", helpdesk, "")
	if !strings.Contains(string(body), password) {
		t.Fatal("the view did not disclose the key")
	}

	// The server's delivery runs the email sink from the trail: wait for it.
	deadline := time.Now().Add(20 * time.Second)
	for len(mail.To("alice@example.com")) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a second email, were one sent, would be here by now
	mails := mail.To("alice@example.com")
	if len(mails) != 1 || len(mail.Received()) != 1 || !mails[0].TLS || mails[0].Authed != mail.User {
		t.Fatalf("emails %+v, want one to the owner over TLS, authenticated", mail.Received())
	}
	_, text := mails[0].Parse(t)
	for _, want := range []string{"LT-0042", "bob@example.com (helpdesk), through the Keyward API, with an API token",
		"Reason:  locked out", "Ticket:  INC0012345", "https://keyward.example.com/devices/" + deviceID} {
		if !strings.Contains(text, want) {
			t.Errorf("the email lacks %q:\n%s", want, text)
		}
	}
	traffic := mail.Traffic.String()
	for _, secret := range append([]string{password, strings.ReplaceAll(password, "-", "")}, strings.Split(password, "-")...) {
		if strings.Contains(traffic, secret) {
			t.Fatal("key material reached the mail server")
		}
	}
}
