package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/store"
)

// sampleFile is DIR/bench.json: how much was seeded, and the devices measure works on.
const sampleFile = "bench.json"

// sampleSize bounds the devices kept in bench.json.
const sampleSize = 5000

type benchFile struct {
	Seed    uint64          `json:"seed"`
	Devices int             `json:"devices"` // seeded so far
	Kinds   map[string]int  `json:"kinds"`
	Sample  []sampledDevice `json:"sample"`
}

// sampledDevice is a seeded device measure can act as (its token) and look up.
type sampledDevice struct {
	ID       string `json:"id"`
	Token    string `json:"token"`
	Name     string `json:"name"`
	Owner    string `json:"owner"`
	Kind     string `json:"kind"`
	VolumeID string `json:"volumeId"` // the system drive; "" for a device that never reported
	KeyID    string `json:"keyId"`    // its active recovery password; "" for none
}

func readBenchFile(dir string) (benchFile, error) {
	var f benchFile
	b, err := os.ReadFile(filepath.Join(dir, sampleFile))
	if errors.Is(err, fs.ErrNotExist) {
		return benchFile{Seed: 1, Kinds: map[string]int{}}, nil
	}
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%s: %w", sampleFile, err)
	}
	return f, nil
}

// writeBenchFile writes the file 0600: it holds device tokens.
func writeBenchFile(dir string, f benchFile) error {
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, sampleFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, sampleFile))
}

func runSeed(ctx context.Context, args []string, out io.Writer) error {
	var c common
	fs := flag.NewFlagSet("seed", flag.ContinueOnError)
	c.flags(fs)
	devices := fs.Int("devices", 0, "how many devices to add to the fleet")
	batch := fs.Int("batch", 2000, "devices per transaction")
	seed := fs.Uint64("seed", 0, "seed of the generated fleet (default: the one in bench.json, or 1)")
	if err := parseFlags(fs, args, &c); err != nil {
		return err
	}
	if *devices <= 0 || *batch <= 0 {
		return usageError{"seed: --devices and --batch must be positive"}
	}
	db, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer func() { db.Close() }()
	bf, err := readBenchFile(c.dataDir)
	if err != nil {
		return err
	}
	if *seed != 0 {
		bf.Seed = *seed
	}
	if bf.Kinds == nil {
		bf.Kinds = map[string]int{}
	}
	start := bf.Devices
	// Keep about sampleSize devices spread over the whole fleet, old and new.
	every := max(1, (start+*devices)/sampleSize)
	kept := thin(bf.Sample, sampleSize*start/(start+*devices))

	// Generating runs ahead of storing, by one batch.
	type generated struct {
		devices []store.SeedDevice
		kinds   []string
	}
	batches := make(chan generated, 1)
	genCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer close(batches)
		f := newFleet(bf.Seed, start, time.Now())
		for from := start; from < start+*devices; from += *batch {
			var g generated
			for i := from; i < min(from+*batch, start+*devices); i++ {
				d, kind := f.device(i)
				g.devices, g.kinds = append(g.devices, d), append(g.kinds, kind)
			}
			select {
			case batches <- g:
			case <-genCtx.Done():
				return
			}
		}
	}()

	began := time.Now()
	origin := escrow.Origin{Source: escrow.SourceAgent, IP: "192.0.2.1", UserAgent: "keyward-agent (keyward-bench seed)"}
	done, lastReport := 0, time.Now()
	for g := range batches {
		seeded, err := db.Seed(ctx, origin, g.devices)
		if err != nil {
			return fmt.Errorf("after %s devices: %w", count(done), err)
		}
		for i, s := range seeded {
			n := start + done + i
			bf.Kinds[g.kinds[i]]++
			if n%every != 0 {
				continue
			}
			d := g.devices[i]
			sd := sampledDevice{ID: s.ID, Token: s.Token.String(), Name: d.Name, Owner: d.OwnerUPN, Kind: g.kinds[i]}
			if len(d.Volumes) > 0 {
				sd.VolumeID = d.Volumes[0].ID
				for _, k := range d.Volumes[0].Keys {
					if !k.Superseded {
						sd.KeyID = k.KeyID
					}
				}
			}
			kept = append(kept, sd)
		}
		done += len(seeded)
		if done == len(seeded) {
			// Statistics from the first batch on, so that the planner picks the indexes a
			// large fleet needs while it grows (the server's PRAGMA optimize does the same).
			if err := c.analyze(ctx); err != nil {
				return err
			}
			// The store's connections compiled their statements before there were statistics,
			// and keep them: open it again, so that it plans with them (opening also drops the
			// sqlite_stat4 samples ANALYZE took, as the store keeps its statistics).
			if err := db.Close(); err != nil {
				return err
			}
			if db, err = c.open(ctx); err != nil {
				return err
			}
		}
		if time.Since(lastReport) > 10*time.Second {
			lastReport = time.Now()
			fmt.Fprintf(out, "seeded %s of %s devices (%s/s)\n", count(done), count(*devices), count(int(float64(done)/time.Since(began).Seconds())))
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := c.analyze(ctx); err != nil {
		return err
	}
	took := time.Since(began)
	bf.Devices += done
	bf.Sample = kept
	if err := writeBenchFile(c.dataDir, bf); err != nil {
		return err
	}
	fmt.Fprintf(out, "seeded %s devices in %s (%s devices/s); the fleet has %s devices\n",
		count(done), took.Round(time.Millisecond), count(int(float64(done)/took.Seconds())), count(bf.Devices))
	names := make([]string, 0, len(bf.Kinds))
	for k := range bf.Kinds {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(out, "  %-20s %9s  %5.1f%%\n", k, count(bf.Kinds[k]), 100*float64(bf.Kinds[k])/float64(bf.Devices))
	}
	return nil
}

// thin returns n elements of s spread evenly over it (all of s if it has no more than n).
func thin[T any](s []T, n int) []T {
	if n >= len(s) {
		return s
	}
	out := make([]T, n)
	for i := range out {
		out[i] = s[i*len(s)/n]
	}
	return out
}

// analyze brings the database's planner statistics up to date, on a connection of its own.
func (c *common) analyze(ctx context.Context) error {
	driver, dsn := "pgx", c.databaseURL
	if dsn == "" {
		driver, dsn = "sqlite", "file:"+filepath.Join(c.dataDir, store.DatabaseFile)+"?_pragma=busy_timeout(10000)"
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	// Table by table: a bare ANALYZE on PostgreSQL would take on every schema of the database.
	for _, table := range []string{"devices", "device_tags", "volumes", "protectors", "recovery_keys", "rotations", "audit_events"} {
		if _, err := db.ExecContext(ctx, `ANALYZE `+table); err != nil {
			return fmt.Errorf("ANALYZE %s: %w", table, err)
		}
	}
	return nil
}
