package web

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
)

// TestBackstop shows the authorization backstop at work: a handler that answers with success
// without having called authorize gets a 500 and its body is dropped; one that checked, or
// that fails, answers as it meant to.
func TestBackstop(t *testing.T) {
	s := &Server{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var err error
	if s.assets, err = loadAssets(); err != nil {
		t.Fatal(err)
	}
	if s.views, err = parseViews(s.assets); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		h    handlerFunc
		want int
	}{
		{"forgot to authorize", func(w http.ResponseWriter, r *http.Request) error {
			_, err := w.Write([]byte("recovery key 123456"))
			return err
		}, http.StatusInternalServerError},
		{"forgot to authorize, redirected", func(w http.ResponseWriter, r *http.Request) error {
			http.Redirect(w, r, "/elsewhere", http.StatusSeeOther)
			return nil
		}, http.StatusInternalServerError},
		{"authorized", func(w http.ResponseWriter, r *http.Request) error {
			markAuthorized(r)
			_, err := w.Write([]byte("fine"))
			return err
		}, http.StatusOK},
		{"refused", func(w http.ResponseWriter, r *http.Request) error {
			return escrow.Errorf(escrow.CodeForbidden, "no")
		}, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			s.serve(tt.h).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil))
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d", rec.Code, tt.want)
			}
			if strings.Contains(rec.Body.String(), "123456") || (tt.want == 500 && rec.Header().Get("Location") != "") {
				t.Fatalf("the backstop let the answer through: %v %q", rec.Header(), rec.Body)
			}
		})
	}
}

func TestLocalPath(t *testing.T) {
	for in, want := range map[string]string{
		"/devices":                      "/devices",
		"/audit?action=key.read":        "/audit?action=key.read",
		"":                              "",
		"devices":                       "",
		"//evil.example/":               "",
		"/\\evil.example":               "",
		"https://evil.example/":         "",
		"javascript:alert(1)":           "",
		"/ok\r\nSet-Cookie: x=y":        "",
		"/" + strings.Repeat("a", 2000): "",
	} {
		if got := localPath(in); got != want {
			t.Errorf("localPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEveryViewParses(t *testing.T) {
	a, err := loadAssets()
	if err != nil {
		t.Fatal(err)
	}
	views, err := parseViews(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(views) != len(allViews) {
		t.Fatalf("%d views parsed, %d declared", len(views), len(allViews))
	}
}

func TestKeyBlocks(t *testing.T) {
	got := keyBlocks("235818-357951-253979-013365-241120-245575-342914-591910")
	if len(got) != 8 || got[0] != "235818" || got[7] != "591910" {
		t.Fatalf("password blocks %v", got)
	}
	got = keyBlocks(strings.Repeat("ABCDEF01", 8))
	if len(got) != 8 || got[7] != "ABCDEF01" {
		t.Fatalf("recovery key groups %v", got)
	}
}
