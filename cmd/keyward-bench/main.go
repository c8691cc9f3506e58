// Command keyward-bench measures Keyward at the size of a real fleet. It is a benchmark, not a
// test: its figures depend on the machine, and CI only runs it small to prove it works.
//
//	go run ./cmd/keyward-bench seed --devices 1000000 --data-dir DIR
//	go run ./cmd/keyward-bench measure --data-dir DIR
//
// seed stores a generated fleet in DIR (or in PostgreSQL with --database-url), through the
// store, with real sealed keys: most devices escrowed, some failed, missing, pending or
// without BitLocker, one in five with a data drive, owners shared as people share laptops. It
// writes DIR/bench.json: a sample of the devices (with their device tokens, so keep the
// directory private) that measure works on.
//
// measure starts the real server (the keyward binary, built from this module unless
// --server-binary names one) on the same database, times each operation of a request path
// (median of several runs), then runs an HTTP load of escrows and of audited key views at
// --clients concurrent clients. It measures the disk's serial fsync rate in the same run and
// prints each throughput also as a multiple of it, with the commits per acknowledged write.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "keyward-bench:", err)
		var usage usageError
		if errors.As(err, &usage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

const usage = "usage: keyward-bench seed --devices N --data-dir DIR [--database-url URL]\n" +
	"       keyward-bench measure --data-dir DIR [--database-url URL] [--clients 32] [--duration 10s]"

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return usageError{usage}
	}
	switch args[0] {
	case "seed":
		return runSeed(ctx, args[1:], out)
	case "measure":
		return runMeasure(ctx, args[1:], out)
	}
	return usageError{fmt.Sprintf("unknown command %q\n%s", args[0], usage)}
}

// common are the flags both commands take: where the installation is.
type common struct {
	dataDir     string
	databaseURL string
}

func (c *common) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.dataDir, "data-dir", "", "the installation's data directory (master key, SQLite database, bench.json)")
	fs.StringVar(&c.databaseURL, "database-url", "", "PostgreSQL URL (postgres://...); the SQLite database in --data-dir without it")
}

func parseFlags(fs *flag.FlagSet, args []string, c *common) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return usageError{fmt.Sprintf("%s: %v\n%s", fs.Name(), err, usage)}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	if c.dataDir == "" {
		return usageError{fs.Name() + ": --data-dir is required"}
	}
	return nil
}

// open opens the installation's store with its master key, creating both if needed, as
// `keyward serve` does.
func (c *common) open(ctx context.Context) (*store.DB, error) {
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return nil, err
	}
	sealer, _, err := seal.LoadOrCreate(filepath.Join(c.dataDir, "master.key"))
	if err != nil {
		return nil, err
	}
	return store.Open(ctx, c.databaseURL, c.dataDir, store.Options{Sealer: sealer})
}

// count formats n with thousands separators.
func count[T int | int64](n T) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
