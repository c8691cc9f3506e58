package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/store"
)

// loadMasterKey loads the master key file of an admin command (storeFlags.keyPath). It never
// creates one.
func loadMasterKey(fs *flag.FlagSet, keyFile string) (*seal.Sealer, error) {
	sealer, err := seal.Load(keyFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, exitError{1, fmt.Sprintf("%s: no master key at %s: give --master-key-file, the master key of the installation's servers", fs.Name(), keyFile)}
	}
	if err != nil {
		return nil, exitError{1, fs.Name() + ": " + err.Error()}
	}
	return sealer, nil
}

// backupCmd writes a consistent snapshot of a running installation to a new file and verifies it.
func backupCmd(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("backup")
	sf := addStoreFlags(fs)
	out := fs.String("out", "", "the new backup file; an existing file is never replaced")
	if err := parse(fs, args, env.getenv); err != nil {
		return err
	}
	if *out == "" {
		return exitError{2, "backup: give --out FILE, the new backup file"}
	}
	sealer, err := loadMasterKey(fs, sf.keyPath())
	if err != nil {
		return err
	}
	db, err := openStore(ctx, fs, sf)
	if err != nil {
		return err
	}
	defer db.Close()
	sum, err := db.Backup(ctx, *out, sealer, cliOrigin())
	if err != nil {
		return exitError{1, "backup: " + err.Error()}
	}
	fmt.Fprintf(env.stdout, "backup %s: %s; audit chain and master key verified; key material is sealed: useless without the master key, which it does not hold\n", *out, sum)
	return nil
}

// restoreCmd copies a verified backup into an empty installation.
func restoreCmd(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("restore")
	sf := addStoreFlags(fs)
	from := fs.String("from", "", "the backup file to restore")
	if err := parse(fs, args, env.getenv); err != nil {
		return err
	}
	if *from == "" {
		return exitError{2, "restore: give --from FILE, the backup to restore"}
	}
	sealer, err := loadMasterKey(fs, sf.keyPath())
	if err != nil {
		return err
	}
	// Everything about the backup is checked before the target is opened, let alone changed.
	b, err := store.OpenBackup(ctx, *from)
	if err != nil {
		return exitError{1, "restore: " + err.Error() + "; nothing was restored"}
	}
	defer b.Close()
	if _, err := b.Verify(ctx, sealer); err != nil {
		return exitError{1, "restore: " + *from + ": " + err.Error() + "; nothing was restored"}
	}
	// A data directory without a database gets one; if the restore fails, the files it made go.
	var made []string
	if *sf.databaseURL == "" {
		dbFile := filepath.Join(*sf.dataDir, store.DatabaseFile)
		if _, err := os.Stat(dbFile); errors.Is(err, os.ErrNotExist) {
			made = []string{dbFile, dbFile + "-wal", dbFile + "-shm"}
		}
	}
	dst, err := store.Open(ctx, *sf.databaseURL, *sf.dataDir, store.Options{Sealer: sealer})
	if err != nil {
		return exitError{1, "restore: " + err.Error()}
	}
	sum, err := b.RestoreTo(ctx, dst, cliOrigin())
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		for _, f := range made {
			os.Remove(f)
		}
		return exitError{1, "restore: " + escrowMessage(err) + "; the target is unchanged"}
	}
	fmt.Fprintf(env.stdout, "restored %s: %s; audit chain verified on the target\n", *from, sum)
	return nil
}

// escrowMessage is the message of a store error without the internal cause of a caller-safe
// one, and the whole text of any other.
func escrowMessage(err error) string {
	if e, ok := errors.AsType[*escrow.Error](err); ok && e.Code != escrow.CodeUnavailable {
		return e.Message
	}
	return err.Error()
}
