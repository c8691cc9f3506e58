package api_test

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/keyward/keyward/internal/store"
)

// openRaw opens the test database directly, as an operator (or an attacker) with file access
// would, to cause faults and look at what is stored.
func openRaw(t testing.TB, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, store.DatabaseFile)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
