package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/store"
)

// rewrapPasses is how many times rotate and rewrap walk the database. A server re-reads a
// replaced key file within a second; until then it may still seal new keys under the old
// primary, which the next pass, rewrapPause later, re-wraps.
const rewrapPasses = 3

var rewrapPause = 2 * time.Second

// masterKeyFlags are the flags of the master-key commands.
type masterKeyFlags struct {
	storeFlags
	batch *int
}

func addMasterKeyFlags(fs *flag.FlagSet) masterKeyFlags {
	return masterKeyFlags{
		storeFlags: addStoreFlags(fs),
		batch:      fs.Int("batch-size", 500, "values re-wrapped per transaction"),
	}
}

func (f masterKeyFlags) path() string { return f.keyPath() }

// startMasterKey adds the master-key flags to fs, parses the arguments and opens the database
// with the key file. The caller closes the database.
func startMasterKey(ctx context.Context, fs *flag.FlagSet, args []string, env cliEnv) (masterKeyFlags, *seal.Sealer, *store.DB, error) {
	f := addMasterKeyFlags(fs)
	if err := parse(fs, args, env.getenv); err != nil {
		return f, nil, nil, err
	}
	sealer, db, err := openSealed(ctx, fs, f)
	return f, sealer, db, err
}

// openSealed loads the master key file (never creating one) and opens the database with it,
// which checks that the file is this installation's before anything changes.
func openSealed(ctx context.Context, fs *flag.FlagSet, f masterKeyFlags) (*seal.Sealer, *store.DB, error) {
	if *f.batch < 1 {
		return nil, nil, exitError{2, fs.Name() + ": --batch-size must be at least 1"}
	}
	if err := checkDataDir(fs, f.storeFlags); err != nil {
		return nil, nil, err
	}
	sealer, err := seal.Load(f.path())
	if err != nil {
		return nil, nil, exitError{1, fs.Name() + ": " + err.Error()}
	}
	db, err := store.Open(ctx, *f.databaseURL, *f.dataDir, store.Options{Sealer: sealer})
	if errors.Is(err, seal.ErrWrongMasterKey) {
		return nil, nil, exitError{1, fmt.Sprintf("%s: master key file %s does not match the database; nothing was changed", fs.Name(), f.path())}
	}
	if err != nil {
		return nil, nil, err
	}
	return sealer, db, nil
}

func masterKeyRotate(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("master-key rotate")
	noRewrap := fs.Bool("no-rewrap", false, "only add the new key; run master-key rewrap once every server has the new file")
	f, sealer, db, err := startMasterKey(ctx, fs, args, env)
	if err != nil {
		return err
	}
	defer db.Close()
	oldID := sealer.PrimaryKeyID()
	newID, err := seal.AddKey(f.path())
	if err != nil {
		return exitError{1, "master-key rotate: " + err.Error()}
	}
	fmt.Fprintf(env.stdout, "added master key ID %d to %s as the primary key; master key ID %d and any older keys stay in the file\n", newID, f.path(), oldID)
	e := cliOrigin().Event(escrow.ActionMasterKeyRotate, escrow.OutcomeSuccess)
	e.Detail = fmt.Sprintf("added master key ID %d as primary (was %d)", newID, oldID)
	if err := db.Record(ctx, e); err != nil {
		return exitError{1, "master-key rotate: the new key is in the file, but recording it failed: " + escrow.ErrorMessage(err)}
	}
	if *noRewrap {
		fmt.Fprintf(env.stdout, "nothing was re-wrapped: copy %s to every server, then run keyward master-key rewrap\n", f.path())
		return nil
	}
	if err := sealer.Reload(); err != nil {
		return exitError{1, "master-key rotate: " + err.Error()}
	}
	return rewrap(ctx, fs.Name(), db, sealer, f, env.stdout, true)
}

func masterKeyRewrap(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("master-key rewrap")
	f, sealer, db, err := startMasterKey(ctx, fs, args, env)
	if err != nil {
		return err
	}
	defer db.Close()
	return rewrap(ctx, fs.Name(), db, sealer, f, env.stdout, false)
}

// rewrap re-wraps everything under the primary, in passes until nothing is left under another
// key, and says what remains to do. With justAdded (the primary was added a moment ago) it
// always makes a second pass: servers sharing the file may have sealed keys under the old
// primary until they noticed the change, and committed them after the first pass looked.
func rewrap(ctx context.Context, name string, db *store.DB, sealer *seal.Sealer, f masterKeyFlags, out io.Writer, justAdded bool) error {
	primary := sealer.PrimaryKeyID()
	var left int
	var use store.MasterKeyUse
	for pass := 1; pass <= rewrapPasses; pass++ {
		res, err := db.RewrapMasterKey(ctx, cliOrigin(), *f.batch)
		if err != nil {
			return exitError{1, fmt.Sprintf("%s: %s; run it again to go on where it stopped", name, escrow.ErrorMessage(err))}
		}
		fmt.Fprintln(out, res)
		if use, err = db.MasterKeyUse(ctx); err != nil {
			return err
		}
		left = use.Unknown
		for id, n := range use.ByKey {
			if id != primary {
				left += n
			}
		}
		if left == 0 && (pass > 1 || !justAdded) {
			fmt.Fprintf(out, "every sealed value is wrapped by master key ID %d. Once every server has this file, "+
				"keyward master-key retire removes the old keys. Backups of the database made before now need the old keys: "+
				"keep a copy of the old key file with them.\n", primary)
			return nil
		}
		if pass < rewrapPasses {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(rewrapPause):
			}
		}
	}
	return exitError{1, fmt.Sprintf("%s: %d sealed values are not wrapped by master key ID %d (%s): a server may still have an old copy of %s; "+
		"copy the file to every server and run keyward master-key rewrap again", name, left, primary, use, f.path())}
}

func masterKeyRetire(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("master-key retire")
	f, sealer, db, err := startMasterKey(ctx, fs, args, env)
	if err != nil {
		return err
	}
	defer db.Close()
	primary := sealer.PrimaryKeyID()
	old := slices.DeleteFunc(sealer.KeyIDs(), func(id uint32) bool { return id == primary })
	if len(old) == 0 {
		fmt.Fprintf(env.stdout, "%s holds only master key ID %d: nothing to retire\n", f.path(), primary)
		return nil
	}
	err = db.RetireMasterKeys(ctx, cliOrigin(), old, func() error { return seal.RemoveKeys(f.path(), old) })
	if err != nil {
		return exitError{1, "master-key retire: " + escrow.ErrorMessage(err)}
	}
	fmt.Fprintf(env.stdout, "retired master key IDs %v from %s; master key ID %d remains. Copy the file to every server. "+
		"Backups of the database made before the rotation open only with the old key file: keep a copy of it with them, offline.\n",
		old, f.path(), primary)
	return nil
}

func masterKeyStatus(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("master-key status")
	f, sealer, db, err := startMasterKey(ctx, fs, args, env)
	if err != nil {
		return err
	}
	defer db.Close()
	use, err := db.MasterKeyUse(ctx)
	if err != nil {
		return err
	}
	for _, id := range sealer.KeyIDs() {
		role := "old"
		if id == sealer.PrimaryKeyID() {
			role = "primary"
		}
		fmt.Fprintf(env.stdout, "master key ID %d\t%s\twraps %d values\n", id, role, use.ByKey[id])
	}
	for _, id := range slices.Sorted(maps.Keys(use.ByKey)) {
		if !slices.Contains(sealer.KeyIDs(), id) {
			fmt.Fprintf(env.stdout, "master key ID %d\tnot in %s\twraps %d values\n", id, f.path(), use.ByKey[id])
		}
	}
	if use.Unknown > 0 {
		fmt.Fprintf(env.stdout, "%d values have a wrapping key that cannot be read\n", use.Unknown)
	}
	return nil
}
