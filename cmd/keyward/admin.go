package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/password"
	"github.com/keyward/keyward/internal/seal"
	"github.com/keyward/keyward/internal/store"
)

// storeFlags are the flags every admin command takes to find the database and its master key.
type storeFlags struct {
	dataDir, databaseURL, keyFile *string
}

func addStoreFlags(fs *flag.FlagSet) storeFlags {
	return storeFlags{
		dataDir:     fs.String("data-dir", "./keyward-data", "data directory"),
		databaseURL: fs.String("database-url", "", "PostgreSQL URL (postgres://...); the SQLite database in --data-dir without it"),
		keyFile:     fs.String("master-key-file", "", "master key file (default DATA_DIR/master.key)"),
	}
}

// keyPath is the master key file: --master-key-file, or master.key in the data directory as
// `serve` uses it.
func (sf storeFlags) keyPath() string {
	if *sf.keyFile != "" {
		return *sf.keyFile
	}
	return filepath.Join(*sf.dataDir, "master.key")
}

// onStore finishes an admin command that works on the database: it adds the store's flags to
// fs, reads the arguments and environment, lets check refuse bad input before anything is
// opened (nil: nothing to check), then opens the store, runs run on it and closes it.
func onStore(ctx context.Context, fs *flag.FlagSet, args []string, env cliEnv, check func() error, run func(db *store.DB) error) error {
	sf := addStoreFlags(fs)
	if err := parse(fs, args, env.getenv); err != nil {
		return err
	}
	if check != nil {
		if err := check(); err != nil {
			return err
		}
	}
	db, err := openStore(ctx, fs, sf)
	if err != nil {
		return err
	}
	defer db.Close()
	return run(db)
}

// openStore opens the database for an admin command, with the master key file (never creating
// one). Admin commands never read key material, but whatever they change is recorded in the
// audit trail, whose chain is keyed by a key sealed under the master key: without it a command
// could not append, and nobody with the database alone can. They can run while servers do.
func openStore(ctx context.Context, fs *flag.FlagSet, sf storeFlags) (*store.DB, error) {
	if err := checkDataDir(fs, sf); err != nil {
		return nil, err
	}
	sealer, err := loadMasterKey(fs, sf.keyPath())
	if err != nil {
		return nil, err
	}
	db, err := store.Open(ctx, *sf.databaseURL, *sf.dataDir, store.Options{Sealer: sealer})
	if errors.Is(err, seal.ErrWrongMasterKey) {
		return nil, exitError{1, fmt.Sprintf("%s: master key file %s does not match the database; nothing was changed", fs.Name(), sf.keyPath())}
	}
	return db, err
}

// checkDataDir refuses a data directory that does not exist, rather than creating an empty
// installation where the operator mistyped the path.
func checkDataDir(fs *flag.FlagSet, sf storeFlags) error {
	if *sf.databaseURL == "" {
		if _, err := os.Stat(*sf.dataDir); err != nil {
			return exitError{1, fmt.Sprintf("%s: data directory %s: %v", fs.Name(), *sf.dataDir, errors.Unwrap(err))}
		}
		if err := store.CheckDataDir(*sf.dataDir); err != nil {
			return exitError{1, fs.Name() + ": " + err.Error()}
		}
	}
	return nil
}

// cliOrigin is the audit origin of an admin command: the operating-system account that ran it.
func cliOrigin() escrow.Origin {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if host, err := os.Hostname(); err == nil {
		name += "@" + host
	}
	return escrow.Origin{Actor: escrow.Actor{Type: escrow.ActorSystem, ID: "cli", Name: name}, Source: escrow.SourceCLI}
}

func usersAdd(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("users add")
	email := fs.String("email", "", "the user's sign-in name")
	role := fs.String("role", "", "admin, helpdesk, auditor or user")
	scope := fs.String("scope-tags", "", "helpdesk only: comma-separated device tags the user may act on")
	pwStdin := fs.Bool("password-stdin", false, "read a sign-in password from standard input")
	var nu escrow.NewUser
	check := func() error {
		nu = escrow.NewUser{Email: *email, Role: escrow.Role(*role)}
		for t := range strings.SplitSeq(*scope, ",") {
			if t = strings.TrimSpace(t); t != "" {
				nu.ScopeTags = append(nu.ScopeTags, t)
			}
		}
		if !*pwStdin {
			return nil
		}
		line, err := bufio.NewReader(env.stdin).ReadString('\n')
		if err != nil && line == "" {
			return exitError{1, "users add: no password on standard input"}
		}
		h, err := password.Hash(strings.TrimRight(line, "\r\n"))
		if err != nil {
			return exitError{1, "users add: " + err.Error()}
		}
		nu.PasswordHash = h
		return nil
	}
	return onStore(ctx, fs, args, env, check, func(db *store.DB) error {
		u, err := db.CreateUser(ctx, cliOrigin(), nu)
		if err != nil {
			return exitError{1, "users add: " + escrow.ErrorMessage(err)}
		}
		fmt.Fprintf(env.stdout, "%s\t%s\t%s\n", u.ID, u.Email, u.Role)
		return nil
	})
}

func tokensCreate(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("tokens create")
	email := fs.String("user", "", "the email of the user the token acts for")
	name := fs.String("name", "", "a name to recognise the token by")
	return onStore(ctx, fs, args, env, nil, func(db *store.DB) error {
		tok, err := db.CreateAPIToken(ctx, cliOrigin(), *email, *name)
		if err != nil {
			return exitError{1, "tokens create: " + escrow.ErrorMessage(err)}
		}
		fmt.Fprintln(env.stdout, tok.String())
		return nil
	})
}

func enrollTokensCreate(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("enroll-tokens create")
	uses := fs.Int64("uses", 0, "how many devices may enroll with it (0: unlimited)")
	expires := fs.String("expires", "", "how long it is valid, like 7d or 36h (empty: no expiry)")
	var validFor time.Duration
	check := func() error {
		if *expires == "" {
			return nil
		}
		d, err := escrow.ParseDuration(*expires)
		if err != nil || d < time.Second {
			return exitError{2, "enroll-tokens create: --expires must be a duration of at least 1s, like 7d or 36h"}
		}
		validFor = d
		return nil
	}
	return onStore(ctx, fs, args, env, check, func(db *store.DB) error {
		t, err := db.CreateEnrollmentToken(ctx, cliOrigin(), *uses, validFor)
		if err != nil {
			return exitError{1, "enroll-tokens create: " + escrow.ErrorMessage(err)}
		}
		fmt.Fprintln(env.stdout, t.Token.String())
		return nil
	})
}

// devicesRetire takes a decommissioned or wiped device out of service (store.RetireDevice).
func devicesRetire(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("devices retire")
	id := fs.String("id", "", "the device's ID")
	reason := fs.String("reason", "", "why the device is retired (kept in the audit trail)")
	check := func() error {
		if *id == "" || strings.TrimSpace(*reason) == "" {
			return exitError{2, "devices retire: give --id and --reason"}
		}
		return nil
	}
	return onStore(ctx, fs, args, env, check, func(db *store.DB) error {
		d, err := db.RetireDevice(ctx, cliOrigin(), *id, strings.TrimSpace(*reason))
		if err != nil {
			return exitError{1, "devices retire: " + escrow.ErrorMessage(err)}
		}
		fmt.Fprintf(env.stdout, "retired %s\t%s\t%s\n", d.ID, d.Name, d.RetiredAt.Format(time.RFC3339))
		return nil
	})
}

// incidentCmd starts incident mode for --for, or stops it. The store records incident.start
// or incident.stop with the command's user.
func incidentCmd(ctx context.Context, args []string, env cliEnv, start bool) error {
	name := "incident stop"
	if start {
		name = "incident start"
	}
	fs := newFlags(name)
	length := new(string)
	if start {
		length = fs.String("for", "", "how long incident mode lasts, like 6h or 1d (at most 7d)")
	}
	var until string
	check := func() error {
		if !start {
			return nil
		}
		d, err := escrow.ParseDuration(*length)
		if err != nil || d < time.Minute || d > escrow.MaxIncident {
			return exitError{2, "incident start: give --for, from 1m to " + escrow.FormatDuration(escrow.MaxIncident) + ", like 6h"}
		}
		until = time.Now().Add(d).UTC().Format(time.RFC3339)
		return nil
	}
	return onStore(ctx, fs, args, env, check, func(db *store.DB) error {
		set, err := db.UpdateSettings(ctx, cliOrigin(), map[string]string{"incidentModeUntil": until})
		if err != nil {
			return exitError{1, name + ": " + escrow.ErrorMessage(err)}
		}
		if start {
			fmt.Fprintf(env.stdout, "incident mode on until %s\n", set.Get("incidentModeUntil"))
		} else {
			fmt.Fprintln(env.stdout, "incident mode off")
		}
		return nil
	})
}

// devicesSet changes a device's owner or tags (store.UpdateDevice): --owner "" clears the
// owner, --tag (repeated) replaces the tags, --no-tags clears them.
func devicesSet(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("devices set")
	id := fs.String("id", "", "the device's ID")
	owner := fs.String("owner", "", `the owner's user principal name ("" clears it)`)
	var tags tagList
	fs.Var(&tags, "tag", "a tag (repeat for several); replaces the device's tags")
	noTags := fs.Bool("no-tags", false, "remove every tag")
	var ch escrow.DeviceChange
	check := func() error {
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "owner":
				ch.OwnerUPN = owner
			case "tag":
				t := []string(tags)
				ch.Tags = &t
			}
		})
		if *noTags {
			if ch.Tags != nil {
				return exitError{2, "devices set: give --tag or --no-tags, not both"}
			}
			ch.Tags = &[]string{}
		}
		if *id == "" || (ch.OwnerUPN == nil && ch.Tags == nil) {
			return exitError{2, "devices set: give --id and --owner, --tag or --no-tags"}
		}
		if err := ch.Validate(); err != nil {
			return exitError{2, "devices set: " + escrow.ErrorMessage(err)}
		}
		return nil
	}
	return onStore(ctx, fs, args, env, check, func(db *store.DB) error {
		d, err := db.UpdateDevice(ctx, cliOrigin(), *id, ch)
		if err != nil {
			return exitError{1, "devices set: " + escrow.ErrorMessage(err)}
		}
		fmt.Fprintf(env.stdout, "%s\t%s\towner %s\ttags %s\n", d.ID, d.Name, orNone(d.OwnerUPN), orNone(strings.Join(d.Tags, ",")))
		return nil
	})
}

// tagList is a repeated flag.
type tagList []string

func (t *tagList) String() string     { return strings.Join(*t, ",") }
func (t *tagList) Set(v string) error { *t = append(*t, v); return nil }

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func auditVerify(ctx context.Context, args []string, env cliEnv) error {
	return onStore(ctx, newFlags("audit verify"), args, env, nil, func(db *store.DB) error {
		n, err := db.VerifyAudit(ctx)
		if broken, ok := errors.AsType[*audit.BrokenError](err); ok {
			if broken.Truncated {
				return exitError{1, fmt.Sprintf("audit chain: the end was cut off after seq %d, or cannot be vouched for: %s", broken.Seq-1, broken.Problem)}
			}
			return exitError{1, broken.Error()}
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "audit chain intact: %d events\n", n)
		return nil
	})
}

func auditExport(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("audit export")
	format := fs.String("format", "ndjson", "json, ndjson or csv")
	var f string
	check := func() error {
		var err error
		if f, err = audit.ParseFormat(*format); err != nil {
			return exitError{2, "audit export: " + escrow.ErrorMessage(err)}
		}
		return nil
	}
	return onStore(ctx, fs, args, env, check, func(db *store.DB) error {
		out := bufio.NewWriter(env.stdout)
		w, err := audit.NewWriter(f, out)
		if err != nil {
			return err
		}
		if err := db.ListAudit(ctx, escrow.AuditFilter{}, w.Write); err != nil {
			return err
		}
		if err := w.Close(""); err != nil {
			return err
		}
		return out.Flush()
	})
}

// migrateStore copies an installation between SQLite and PostgreSQL, then verifies the copy:
// the audit chain must verify on the destination and hold the source's events and the
// destination's store.migrate. Both stores are opened with the installation's master key: the
// copy is recorded in both audit trails, and the copied chain is verified with its key.
func migrateStore(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("migrate-store")
	from := fs.String("from", "", "the installation to copy: a data directory or a postgres:// URL")
	to := fs.String("to", "", "the empty destination: a postgres:// URL or a data directory")
	keyFile := fs.String("master-key-file", "", "the installation's master key file (default FROM/master.key when --from is a data directory)")
	if err := parse(fs, args, env.getenv); err != nil {
		return err
	}
	if *from == "" || *to == "" {
		return exitError{2, "migrate-store: give --from and --to"}
	}
	isURL := func(where string) bool {
		return strings.HasPrefix(where, "postgres://") || strings.HasPrefix(where, "postgresql://")
	}
	if *keyFile == "" {
		if isURL(*from) {
			return exitError{2, "migrate-store: give --master-key-file, the installation's master key"}
		}
		*keyFile = filepath.Join(*from, "master.key")
	}
	open := func(where string, mustExist bool, sealer *seal.Sealer) (*store.DB, error) {
		opts := store.Options{Sealer: sealer}
		var db *store.DB
		var err error
		if isURL(where) {
			db, err = store.Open(ctx, where, "", opts)
		} else {
			if _, err := os.Stat(filepath.Join(where, store.DatabaseFile)); mustExist && err != nil {
				return nil, exitError{1, fmt.Sprintf("migrate-store: no Keyward database in %s", where)}
			}
			db, err = store.Open(ctx, "", where, opts)
		}
		if errors.Is(err, seal.ErrWrongMasterKey) {
			return nil, exitError{1, fmt.Sprintf("migrate-store: master key file %s does not match %s; nothing was copied", *keyFile, storeName(where))}
		}
		return db, err
	}
	sealer, err := loadMasterKey(fs, *keyFile)
	if err != nil {
		return err
	}
	src, err := open(*from, true, sealer)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := open(*to, false, sealer)
	if err != nil {
		return err
	}
	defer dst.Close()
	stats, err := src.MigrateTo(ctx, dst, cliOrigin(), storeName(*from), storeName(*to))
	if err != nil {
		return exitError{1, "migrate-store: " + err.Error() + "; the destination is unchanged"}
	}
	n, err := dst.VerifyAudit(ctx)
	if err != nil {
		return exitError{1, "migrate-store: the copied audit chain does not verify: " + err.Error()}
	}
	if n != stats["audit_events"]+1 {
		return exitError{1, fmt.Sprintf("migrate-store: %d audit events copied but %d verified", stats["audit_events"], n-1)}
	}
	fmt.Fprintf(env.stdout, "copied %d devices, %d keys, %d users, %d audit events; audit chain verified on the destination\n",
		stats["devices"], stats["recovery_keys"], stats["users"], stats["audit_events"])
	return nil
}

// storeName names a store for the audit trail: a data directory by its absolute path, a
// PostgreSQL URL without its user, password and parameters, which may hold secrets.
func storeName(where string) string {
	if u, err := url.Parse(where); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	}
	if abs, err := filepath.Abs(where); err == nil {
		return abs
	}
	return where
}
