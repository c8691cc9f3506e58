package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/importer"
	"github.com/keyward/keyward/internal/store"
)

// importBatch is how many records one import transaction takes: large enough that a directory
// of a hundred thousand keys is a few hundred transactions, small enough that servers running
// beside the import wait for the write lock only milliseconds at a time.
const importBatch = 500

// importer feeds records from a source to store.Import in batches, prints each record it
// skipped (by position, never with its material), the progress on large sources, and a
// summary.
type importRun struct {
	ctx      context.Context
	db       *store.DB
	source   string // names the source in each key.import event
	dryRun   bool
	out, log io.Writer
	batch    []escrow.ImportRecord
	counts   map[escrow.ImportOutcome]int
	devices  int // new device records
	read     int
	started  time.Time
	reported time.Time
}

func newImportRun(ctx context.Context, db *store.DB, source string, dryRun bool, env cliEnv) *importRun {
	now := time.Now()
	return &importRun{ctx: ctx, db: db, source: source, dryRun: dryRun, out: env.stdout, log: env.stderr,
		counts: map[escrow.ImportOutcome]int{}, started: now, reported: now}
}

// add is the sources' importer.Each.
func (r *importRun) add(rec escrow.ImportRecord) error {
	r.batch = append(r.batch, rec)
	r.read++
	if len(r.batch) < importBatch {
		return nil
	}
	return r.flush()
}

func (r *importRun) flush() error {
	if len(r.batch) == 0 {
		return nil
	}
	results, err := r.db.Import(r.ctx, cliOrigin(), r.source, r.batch, r.dryRun)
	if err != nil {
		return exitError{1, fmt.Sprintf("import: %s (the last %d records were not stored; running the import again resumes)", escrow.ErrorMessage(err), len(r.batch))}
	}
	r.batch = r.batch[:0]
	for _, res := range results {
		r.counts[res.Outcome]++
		if res.NewDevice && res.Outcome == escrow.ImportAdded {
			r.devices++
		}
		switch res.Outcome {
		case escrow.ImportInvalid, escrow.ImportConflict:
			fmt.Fprintf(r.out, "%s: %s %s: %s\n", res.Position, res.Outcome, describeRecord(res), res.Message)
		case escrow.ImportUnchanged:
			if res.Message != "" {
				fmt.Fprintf(r.out, "%s: %s %s: %s\n", res.Position, res.Outcome, describeRecord(res), res.Message)
			}
		}
	}
	if now := time.Now(); now.Sub(r.reported) >= 2*time.Second {
		r.reported = now
		rate := float64(r.read) / now.Sub(r.started).Seconds()
		fmt.Fprintf(r.log, "import: %d records read, %.0f a second\n", r.read, rate)
	}
	return nil
}

func describeRecord(res escrow.ImportResult) string {
	s := res.Hostname
	if s == "" {
		s = "(no hostname)"
	}
	if res.KeyID != "" {
		s += " key " + res.KeyID
	}
	return s
}

// finish stores the last batch and prints the summary. Records skipped make the command exit
// 1 once everything valid is stored, so a scheduled import gets noticed.
func (r *importRun) finish() error {
	if err := r.flush(); err != nil {
		return err
	}
	verb := "imported"
	if r.dryRun {
		verb = "would import"
	}
	fmt.Fprintf(r.out, "%d records: %s %d keys (%d new device records), %d already held, %d conflicting, %d invalid, in %s\n",
		r.read, verb, r.counts[escrow.ImportAdded], r.devices, r.counts[escrow.ImportUnchanged],
		r.counts[escrow.ImportConflict], r.counts[escrow.ImportInvalid], time.Since(r.started).Round(time.Millisecond))
	if r.dryRun {
		fmt.Fprintln(r.out, "dry run: nothing was stored")
	}
	if n := r.counts[escrow.ImportConflict] + r.counts[escrow.ImportInvalid]; n > 0 {
		return exitError{1, fmt.Sprintf("import: %d records skipped (listed above)", n)}
	}
	return nil
}

// importFlags are the flags every import takes.
func addImportFlags(fs *flag.FlagSet) *bool {
	return fs.Bool("dry-run", false, "report what the import would do and store nothing")
}

// importCSV reads a CSV file (importer.ReadCSV): the CrowdStrike export, or Keyward's own.
func importCSV(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("import csv")
	file := fs.String("file", "", "the CSV file (- for standard input)")
	dryRun := addImportFlags(fs)
	check := func() error {
		if *file == "" {
			return exitError{2, "import csv: give --file"}
		}
		return nil
	}
	return onStore(ctx, fs, args, env, check, func(db *store.DB) error {
		in := env.stdin
		if *file != "-" {
			f, err := os.Open(*file)
			if err != nil {
				return exitError{1, "import csv: " + err.Error()}
			}
			defer f.Close()
			in = f
		}
		run := newImportRun(ctx, db, "csv "+*file, *dryRun, env)
		if err := importer.ReadCSV(in, run.add); err != nil {
			return readFailed(run, "import csv", err)
		}
		return run.finish()
	})
}

// importEntra reads a tenant's keys from Microsoft Graph (importer.Entra).
func importEntra(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("import entra")
	tenant := fs.String("tenant", "", "the Entra tenant ID or domain")
	clientID := fs.String("client-id", "", "the app registration's application (client) ID")
	secretFile := fs.String("client-secret-file", "", "a file holding the client secret (or KEYWARD_ENTRA_CLIENT_SECRET)")
	graphURL := fs.String("graph-url", "https://graph.microsoft.com/v1.0", "Microsoft Graph's root, for national clouds")
	loginURL := fs.String("login-url", "https://login.microsoftonline.com", "the identity platform's root, for national clouds")
	dryRun := addImportFlags(fs)
	var secret string
	check := func() error {
		if *tenant == "" || *clientID == "" {
			return exitError{2, "import entra: give --tenant and --client-id"}
		}
		secret = env.getenv("KEYWARD_ENTRA_CLIENT_SECRET")
		if *secretFile != "" {
			b, err := os.ReadFile(*secretFile)
			if err != nil {
				return exitError{1, "import entra: " + err.Error()}
			}
			secret = strings.TrimSpace(string(b))
		}
		if secret == "" {
			return exitError{2, "import entra: give --client-secret-file or KEYWARD_ENTRA_CLIENT_SECRET"}
		}
		return nil
	}
	return onStore(ctx, fs, args, env, check, func(db *store.DB) error {
		g := &importer.Entra{TenantID: *tenant, ClientID: *clientID, ClientSecret: secret, GraphURL: *graphURL, LoginURL: *loginURL,
			UserAgent: "Keyward/" + version}
		run := newImportRun(ctx, db, "entra tenant "+*tenant, *dryRun, env)
		if err := g.Read(ctx, run.add); err != nil {
			return readFailed(run, "import entra", err)
		}
		return run.finish()
	})
}

// readFailed stores what a source read before it failed (a second run resumes: what is held
// is unchanged) and reports the failure.
func readFailed(run *importRun, name string, err error) error {
	if _, ok := err.(exitError); ok {
		return err
	}
	if ferr := run.flush(); ferr != nil {
		return ferr
	}
	return exitError{1, fmt.Sprintf("%s: %v (%d records read; those before it were stored)", name, err, run.read)}
}

// importAD reads Active Directory's msFVE-RecoveryInformation objects over LDAP (importer.AD).
func importAD(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("import ad")
	ldapURL := fs.String("url", "", "the directory: ldaps://dc1.example.com, or ldap://… with --start-tls")
	startTLS := fs.Bool("start-tls", false, "StartTLS on an ldap:// connection")
	caFile := fs.String("ca-file", "", "PEM certificates to trust for the directory's TLS (default: the system's)")
	bindDN := fs.String("bind-dn", "", "simple bind: the DN or user@domain to bind as")
	pwFile := fs.String("bind-password-file", "", "simple bind: a file holding the password (or KEYWARD_AD_BIND_PASSWORD)")
	certFile := fs.String("client-cert", "", "SASL EXTERNAL bind: the client certificate (PEM)")
	keyFile := fs.String("client-key", "", "SASL EXTERNAL bind: its private key (PEM)")
	baseDN := fs.String("base-dn", "", "where to search, e.g. DC=example,DC=com")
	filter := fs.String("filter", "", "an extra LDAP filter on the recovery objects")
	owner := fs.String("owner-attribute", "managedBy", "the computer attribute naming its owner (a DN or a UPN)")
	pageSize := fs.Uint("page-size", 500, "LDAP paged-results page size")
	dryRun := addImportFlags(fs)
	a := &importer.AD{}
	check := func() error {
		if *ldapURL == "" || *baseDN == "" {
			return exitError{2, "import ad: give --url and --base-dn"}
		}
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if *caFile != "" {
			pem, err := os.ReadFile(*caFile)
			if err != nil {
				return exitError{1, "import ad: " + err.Error()}
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return exitError{2, "import ad: --ca-file holds no PEM certificate"}
			}
		}
		if u, err := url.Parse(*ldapURL); err == nil {
			cfg.ServerName = u.Hostname()
		}
		*a = importer.AD{URL: *ldapURL, StartTLS: *startTLS, TLS: cfg, BindDN: *bindDN, BaseDN: *baseDN, Filter: *filter,
			OwnerAttribute: *owner, PageSize: uint32(*pageSize)}
		switch {
		case *certFile != "":
			cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
			if err != nil {
				return exitError{1, "import ad: client certificate: " + err.Error()}
			}
			cfg.Certificates, a.SASLExternal = []tls.Certificate{cert}, true
		case *bindDN != "":
			a.Password = env.getenv("KEYWARD_AD_BIND_PASSWORD")
			if *pwFile != "" {
				b, err := os.ReadFile(*pwFile)
				if err != nil {
					return exitError{1, "import ad: " + err.Error()}
				}
				a.Password = strings.TrimRight(string(b), "\r\n")
			}
			if a.Password == "" {
				return exitError{2, "import ad: give --bind-password-file or KEYWARD_AD_BIND_PASSWORD"}
			}
		default:
			return exitError{2, "import ad: give --bind-dn (simple bind) or --client-cert and --client-key (SASL EXTERNAL)"}
		}
		return nil
	}
	return onStore(ctx, fs, args, env, check, func(db *store.DB) error {
		run := newImportRun(ctx, db, "ad "+*ldapURL, *dryRun, env)
		if err := a.Read(ctx, run.add); err != nil {
			return readFailed(run, "import ad", err)
		}
		return run.finish()
	})
}
