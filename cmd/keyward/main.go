// Command keyward is the Keyward server and its admin commands. Subcommands only wire the
// internal packages together.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

const usage = `keyward: self-hosted BitLocker recovery key escrow

Usage:
  keyward serve [--data-dir D] [--listen ADDR] [--master-key-file F] [--tls-cert F --tls-key F]
  keyward users add --email E --role admin|helpdesk|auditor|user [--scope-tags T1,T2] [--password-stdin]
  keyward users list
  keyward users disable --email E
  keyward users enable --email E
  keyward users set-role --email E --role admin|helpdesk|auditor|user
  keyward users link-sso --email E
  keyward tokens create --user E [--name N]
  keyward tokens list [--user E]
  keyward tokens revoke --id ID
  keyward enroll-tokens create [--uses N] [--expires DURATION]
  keyward enroll-tokens list
  keyward enroll-tokens revoke --id ID
  keyward devices retire --id DEVICE_ID --reason TEXT
  keyward incident start --for DURATION
  keyward incident stop
  keyward devices set --id DEVICE_ID [--owner UPN] [--tag T]... [--no-tags]
  keyward audit verify
  keyward audit export [--format json|ndjson|csv]
  keyward import csv --file F [--dry-run]
  keyward import ad --url ldaps://DC --base-dn DN (--bind-dn DN [--bind-password-file F] | --client-cert F --client-key F) [--start-tls] [--ca-file F] [--filter F] [--owner-attribute A] [--dry-run]
  keyward import entra --tenant T --client-id ID [--client-secret-file F] [--graph-url U] [--login-url U] [--dry-run]
  keyward export --out FILE (--recipient age1… | --recipient-file F) --reason TEXT
  keyward recover --bundle FILE --identity KEYFILE --key-id 218A3504
  keyward backup --out FILE [--master-key-file F]
  keyward restore --from FILE [--master-key-file F]
  keyward migrate-store --from DATA_DIR_OR_URL --to URL_OR_DATA_DIR [--master-key-file F]
  keyward master-key rotate [--no-rewrap] [--master-key-file F] [--batch-size N]
  keyward master-key rewrap [--master-key-file F] [--batch-size N]
  keyward master-key retire [--master-key-file F]
  keyward master-key status [--master-key-file F]
  keyward setup-link [--public-url URL] [--listen ADDR]
  keyward version

First start: on an installation with no admin, "serve" prints a one-time setup link (it works
once, for an hour) whose page creates the first admin; "setup-link" prints a new one.

Master-key rotation, with the servers running: "rotate" adds a new primary key to the key file
and re-wraps every data key under it. With several servers, each with its own copy of the file:
"rotate --no-rewrap" on one, copy the file to every server, then "rewrap". "retire" removes the
old keys once nothing uses them; backups made before the rotation still need the old file.

Taking access away: "users disable" ends the person's portal sessions and refuses their sign-ins
and API tokens until "users enable"; "tokens revoke" and "enroll-tokens revoke" take the ID the
list commands show (the 16 hex digits after kwt_ or kwe_), never the token itself. Both apply
at once on every server.

Single sign-on: a person is known by their identity at the provider (issuer and subject), linked
at their first sign-on with a verified email, and only if they have no password ("users add"
without --password-stdin makes such a person). "users link-sso" lets a person with a password be
linked at their next such sign-on, which removes the password. "users set-role" changes a role;
the last enabled admin keeps theirs.

Retiring a decommissioned or wiped device: "devices retire" refuses its device token at once,
fails its open rotations and supersedes its keys, which stay viewable (audited) for the
retention period and are then purged; the device leaves the device list, the escrow report and
the metrics. "devices set" changes who owns a device (who may get its keys through self-service;
--owner "" clears it) and its tags (what a helpdesk's scope selects; --tag replaces them all).

Incident mode, for a mass-recovery day: "incident start --for 6h" lifts the per-address
self-service limit (each person's limit stays) until then, at most 7d; "incident stop" ends
it sooner. Both are recorded in the audit trail, and every admin page shows a banner meanwhile.

backup writes a consistent snapshot, taken while servers run, to a new SQLite file and verifies
it; restore copies a verified backup into an empty data directory or database. Both check the
backup with the master key (default DATA_DIR/master.key), which the backup does not hold:
key material in it is sealed, and useless without the master key. Keep the two apart.

Moving to Keyward: "import ad" reads Active Directory's msFVE-RecoveryInformation objects over
LDAP with TLS; "import entra" reads Entra ID's keys through Microsoft Graph; "import csv" reads
the CrowdStrike export (Hostname, KeyID, RecoveryKey) or Keyward's own CSV (hostname, keyId,
recoveryPassword, ownerUpn, volumeType). Each key is
validated, sealed and attached to the device with that hostname (or a new device record with no
agent yet) with a key.import event; a second run changes nothing; --dry-run stores nothing.

Break-glass copy: "export" writes every active and retained key into one file encrypted with age
to the recipient, as one key.export event; "recover" prints the password(s) for a key ID from
that file with the identity alone, no server and no database.

Every command takes --data-dir (default ./keyward-data) or --database-url postgres://..., and
--master-key-file (default DATA_DIR/master.key): the audit trail is keyed by the master key;
every flag can also be given as an environment variable: --data-dir as KEYWARD_DATA_DIR, --listen as KEYWARD_LISTEN, and so on.
`

// Run runs one command and returns the process exit code.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	err := dispatch(ctx, args, stdin, stdout, stderr, getenv)
	var exit exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		fmt.Fprintln(stderr, "keyward:", exit.msg)
		return exit.code
	case errors.Is(err, errUsage):
		fmt.Fprint(stderr, usage)
		return 2
	}
	fmt.Fprintln(stderr, "keyward:", err)
	return 1
}

var errUsage = errors.New("usage")

// exitError ends a command with a given exit code and message.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

func dispatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		return errUsage
	}
	env := cliEnv{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	cmd, rest := args[0], args[1:]
	sub := ""
	if len(rest) > 0 {
		sub = rest[0]
	}
	switch {
	case cmd == "serve":
		return runServe(ctx, rest, env)
	case cmd == "users" && sub == "add":
		return usersAdd(ctx, rest[1:], env)
	case cmd == "users" && sub == "list":
		return usersList(ctx, rest[1:], env)
	case cmd == "users" && (sub == "disable" || sub == "enable"):
		return usersSetDisabled(ctx, rest[1:], env, sub == "disable")
	case cmd == "users" && sub == "set-role":
		return usersSetRole(ctx, rest[1:], env)
	case cmd == "users" && sub == "link-sso":
		return usersLinkSSO(ctx, rest[1:], env)
	case cmd == "tokens" && sub == "create":
		return tokensCreate(ctx, rest[1:], env)
	case cmd == "tokens" && sub == "list":
		return tokensList(ctx, rest[1:], env)
	case cmd == "tokens" && sub == "revoke":
		return tokensRevoke(ctx, rest[1:], env)
	case cmd == "enroll-tokens" && sub == "create":
		return enrollTokensCreate(ctx, rest[1:], env)
	case cmd == "enroll-tokens" && sub == "list":
		return enrollTokensList(ctx, rest[1:], env)
	case cmd == "enroll-tokens" && sub == "revoke":
		return enrollTokensRevoke(ctx, rest[1:], env)
	case cmd == "devices" && sub == "retire":
		return devicesRetire(ctx, rest[1:], env)
	case cmd == "incident" && (sub == "start" || sub == "stop"):
		return incidentCmd(ctx, rest[1:], env, sub == "start")
	case cmd == "devices" && sub == "set":
		return devicesSet(ctx, rest[1:], env)
	case cmd == "audit" && sub == "verify":
		return auditVerify(ctx, rest[1:], env)
	case cmd == "audit" && sub == "export":
		return auditExport(ctx, rest[1:], env)
	case cmd == "import" && sub == "csv":
		return importCSV(ctx, rest[1:], env)
	case cmd == "import" && sub == "ad":
		return importAD(ctx, rest[1:], env)
	case cmd == "import" && sub == "entra":
		return importEntra(ctx, rest[1:], env)
	case cmd == "export":
		return exportCmd(ctx, rest, env)
	case cmd == "recover":
		return recoverCmd(rest, env)
	case cmd == "backup":
		return backupCmd(ctx, rest, env)
	case cmd == "restore":
		return restoreCmd(ctx, rest, env)
	case cmd == "master-key" && sub == "rotate":
		return masterKeyRotate(ctx, rest[1:], env)
	case cmd == "master-key" && sub == "rewrap":
		return masterKeyRewrap(ctx, rest[1:], env)
	case cmd == "master-key" && sub == "retire":
		return masterKeyRetire(ctx, rest[1:], env)
	case cmd == "master-key" && sub == "status":
		return masterKeyStatus(ctx, rest[1:], env)
	case cmd == "migrate-store":
		return migrateStore(ctx, rest, env)
	case cmd == "setup-link":
		return setupLinkCmd(ctx, rest, env)
	case cmd == "version" || cmd == "--version":
		return versionCmd(rest, env)
	case cmd == "help" || cmd == "-h" || cmd == "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return errUsage
}

// cliEnv is the process's outside world, injected so that tests run commands in-process.
type cliEnv struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}
