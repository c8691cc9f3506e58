package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// TestBenchmarkRunsSmall seeds a small fleet and measures it, quickly: the benchmark works and
// prints sane figures. Its speed is not tested; that is what the benchmark is for.
func TestBenchmarkRunsSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server")
	}
	t.Run("sqlite", func(t *testing.T) { benchSmall(t, "") })
	t.Run("postgres", func(t *testing.T) {
		base := os.Getenv("KEYWARD_TEST_POSTGRES_URL")
		if base == "" {
			t.Skip("KEYWARD_TEST_POSTGRES_URL not set")
		}
		benchSmall(t, pgSchema(t, base))
	})
}

func benchSmall(t *testing.T, databaseURL string) {
	bin := testkit.Binary(t, "github.com/keyward/keyward/cmd/keyward")
	dir := t.TempDir()
	db := []string{"--data-dir", dir}
	if databaseURL != "" {
		db = append(db, "--database-url", databaseURL)
	}
	var out bytes.Buffer
	if err := run(t.Context(), append([]string{"seed", "--devices", "300", "--batch", "64"}, db...), &out); err != nil {
		t.Fatalf("seed: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "seeded 300 devices") || !strings.Contains(out.String(), "escrowed") {
		t.Fatalf("seed printed:\n%s", out.String())
	}
	if fi, err := os.Stat(filepath.Join(dir, sampleFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, %v; want it private (it holds device tokens)", sampleFile, fi, err)
	}

	out.Reset()
	args := append([]string{"measure", "--runs", "3", "--clients", "4", "--duration", "1s", "--server-binary", bin}, db...)
	if err := run(t.Context(), args, &out); err != nil {
		t.Fatalf("measure: %v\n%s", err, out.String())
	}
	text := out.String()
	t.Log("\n" + text)
	for _, op := range []string{"device list page", "status-filtered page", "device details", "view of a device's keys",
		"key-ID lookup", "audit page", "portal device search", "escrow report summary", "escrow report, full JSON", "escrow report, full CSV", "census"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(op) + `.* \d+\.\d\d ms +\d+\.\d\d ms +3`).MatchString(text) {
			t.Errorf("no timing of %q", op)
		}
	}
	if m := regexp.MustCompile(`serial fsync rate of .*: ([\d,]+)/s`).FindStringSubmatch(text); m == nil || m[1] == "0" {
		t.Errorf("no serial fsync rate")
	}
	loads := regexp.MustCompile(`(?m)^  (escrow|view).*? ([\d,]+)/s +(\d+\.\d\d)x fsync +p50 (\d+\.\d\d) ms +p99 (\d+\.\d\d) ms +(\d\.\d+) commits/write$`).FindAllStringSubmatch(text, -1)
	if len(loads) != 2 {
		t.Fatalf("want an escrow and a view load line, got %q", loads)
	}
	for _, l := range loads {
		rate, _ := strconv.Atoi(strings.ReplaceAll(l[2], ",", ""))
		perWrite, _ := strconv.ParseFloat(l[6], 64)
		p50, _ := strconv.ParseFloat(l[4], 64)
		p99, _ := strconv.ParseFloat(l[5], 64)
		if rate <= 0 || perWrite <= 0 || perWrite > 1 || p50 <= 0 || p99 < p50 {
			t.Errorf("%s load: %s/s, p50 %v ms, p99 %v ms, %v commits/write", l[1], l[2], p50, p99, perWrite)
		}
	}
	if strings.Contains(text, "requests failed") {
		t.Errorf("requests failed under load")
	}
	// The seeded fleet and everything the load did are in one audit chain that verifies.
	verify := exec.Command(bin, append([]string{"audit", "verify"}, db...)...)
	if b, err := verify.CombinedOutput(); err != nil {
		t.Errorf("audit verify: %v\n%s", err, b)
	}
}

// pgSchema creates a schema for the test and returns a URL whose connections use it.
func pgSchema(t *testing.T, base string) string {
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("kw_bench_%d", time.Now().UnixNano())
	if _, err := admin.Exec(`CREATE SCHEMA ` + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = admin.ExecContext(context.Background(), `DROP SCHEMA `+name+` CASCADE`)
		admin.Close()
	})
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + name
}
