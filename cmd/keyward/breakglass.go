package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/store"
)

// The break-glass copy: every key Keyward holds, in one file encrypted with age to recipients
// whose identities are kept offline, so that losing the server (its database, its master key,
// or both) cannot lose the keys. The plaintext is one JSON document in the format below;
// "recover" reads it with nothing but the identity.

// bundleFormat names the copy's format, which must only ever grow fields.
const bundleFormat = "keyward-break-glass-1"

// bundleKey is one key of the copy.
type bundleKey struct {
	DeviceName       string    `json:"deviceName"`
	DeviceID         string    `json:"deviceId"`
	OwnerUPN         string    `json:"ownerUpn,omitempty"`
	KeyID            string    `json:"keyId"`
	VolumeID         string    `json:"volumeId"`
	MountPoint       string    `json:"mountPoint,omitempty"`
	VolumeType       string    `json:"volumeType"`
	Kind             string    `json:"kind"`
	Status           string    `json:"status"`
	EscrowedAt       time.Time `json:"escrowedAt"`
	RecoveryPassword string    `json:"recoveryPassword,omitempty"`
	RecoveryKey      string    `json:"recoveryKey,omitempty"`
}

type bundle struct {
	Format    string      `json:"format"`
	CreatedAt time.Time   `json:"createdAt"`
	Keys      []bundleKey `json:"keys"`
}

// readRecipients returns the age recipients of --recipient and --recipient-file, and their
// fingerprint for the audit trail.
func readRecipients(recipient, file string) ([]age.Recipient, string, error) {
	var text string
	switch {
	case (recipient == "") == (file == ""):
		return nil, "", exitError{2, "export: give --recipient age1… or --recipient-file FILE"}
	case recipient != "":
		text = recipient
	default:
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, "", exitError{1, "export: " + err.Error()}
		}
		text = string(b)
	}
	rs, err := age.ParseRecipients(strings.NewReader(text))
	if err != nil {
		return nil, "", exitError{2, "export: recipient: " + err.Error()}
	}
	var lines []string
	for l := range strings.Lines(text) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return rs, recipientFingerprint(lines), nil
}

// recipientFingerprint is what the audit trail keeps of the recipients: SHA-256 over their
// public keys, one per line, shortened; the same recipients give the same fingerprint.
func recipientFingerprint(lines []string) string {
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return "sha256:" + hex.EncodeToString(sum[:16])
}

// exportCmd writes the break-glass copy (store.ExportKeys): the file appears under its name
// only once its key.export event has committed.
func exportCmd(ctx context.Context, args []string, env cliEnv) error {
	fs := newFlags("export")
	recipient := fs.String("recipient", "", "the age recipient (age1…) to encrypt the copy to")
	recipientFile := fs.String("recipient-file", "", "a file of age recipients, one a line")
	out := fs.String("out", "", "the file to write")
	reason := fs.String("reason", "", "why the copy is made (kept in the audit trail)")
	var recipients []age.Recipient
	var fingerprint string
	check := func() error {
		if *out == "" || strings.TrimSpace(*reason) == "" {
			return exitError{2, "export: give --out and --reason"}
		}
		var err error
		recipients, fingerprint, err = readRecipients(*recipient, *recipientFile)
		return err
	}
	return onStore(ctx, fs, args, env, check, func(db *store.DB) error {
		tmp, err := os.CreateTemp(filepath.Dir(*out), "."+filepath.Base(*out)+".*")
		if err != nil {
			return exitError{1, "export: " + err.Error()}
		}
		defer os.Remove(tmp.Name()) // gone once renamed
		defer tmp.Close()
		fileBuf := bufio.NewWriter(tmp)
		w, err := age.Encrypt(fileBuf, recipients...)
		if err != nil {
			return exitError{1, "export: " + err.Error()}
		}
		bw := bufio.NewWriter(w)
		enc := json.NewEncoder(bw)
		head, _ := json.Marshal(struct {
			Format    string    `json:"format"`
			CreatedAt time.Time `json:"createdAt"`
		}{bundleFormat, time.Now().UTC().Truncate(time.Second)})
		bw.Write(head[:len(head)-1])
		bw.WriteString(`,"keys":[` + "\n")
		first := true
		each := func(k escrow.ExportedKey) error {
			if !first {
				bw.WriteString(",")
			}
			first = false
			bk := bundleKey{DeviceName: k.DeviceName, DeviceID: k.DeviceID, OwnerUPN: k.OwnerUPN, KeyID: k.KeyID,
				VolumeID: k.VolumeID, MountPoint: k.MountPoint, VolumeType: string(k.VolumeType), Kind: string(k.Kind),
				Status: string(k.Status), EscrowedAt: k.CreatedAt}
			if k.Kind == escrow.KindRecoveryKey {
				bk.RecoveryKey = k.Material
			} else {
				bk.RecoveryPassword = k.Material
			}
			return enc.Encode(bk)
		}
		// The copy is durable before its event commits: buffered JSON, then age's last chunk,
		// then the file's buffer, then the disk.
		finish := func() error {
			bw.WriteString("]}\n")
			if err := bw.Flush(); err != nil {
				return err
			}
			if err := w.Close(); err != nil {
				return err
			}
			if err := fileBuf.Flush(); err != nil {
				return err
			}
			return errors.Join(tmp.Sync(), tmp.Close())
		}
		n, err := db.ExportKeys(ctx, cliOrigin(), *reason, fingerprint, each, finish)
		if err != nil {
			return exitError{1, "export: " + escrow.ErrorMessage(err) + "; no copy was written"}
		}
		if err := os.Rename(tmp.Name(), *out); err != nil {
			return exitError{1, "export: " + err.Error()}
		}
		fmt.Fprintf(env.stdout, "%d keys written to %s for recipient %s\n", n, *out, fingerprint)
		return nil
	})
}

// recoverCmd prints the recovery passwords of a break-glass copy whose key IDs start with the
// given prefix, with no server and no database: for the day Keyward itself is down.
func recoverCmd(args []string, env cliEnv) error {
	fs := newFlags("recover")
	bundlePath := fs.String("bundle", "", "the break-glass copy written by export")
	identity := fs.String("identity", "", "the age identity file the copy was encrypted to")
	keyID := fs.String("key-id", "", "the recovery key ID shown on the recovery screen, or its first 8 characters")
	if err := parse(fs, args, env.getenv); err != nil {
		return err
	}
	if *bundlePath == "" || *identity == "" || *keyID == "" {
		return exitError{2, "recover: give --bundle, --identity and --key-id"}
	}
	prefix, err := escrow.ParseKeyIDPrefix(*keyID)
	if err != nil {
		return exitError{2, "recover: " + escrow.ErrorMessage(err)}
	}
	idf, err := os.Open(*identity)
	if err != nil {
		return exitError{1, "recover: " + err.Error()}
	}
	ids, err := age.ParseIdentities(idf)
	idf.Close()
	if err != nil {
		return exitError{1, fmt.Sprintf("recover: %s: %v", *identity, err)}
	}
	bf, err := os.Open(*bundlePath)
	if err != nil {
		return exitError{1, "recover: " + err.Error()}
	}
	defer bf.Close()
	r, err := age.Decrypt(bufio.NewReader(bf), ids...)
	var noMatch *age.NoIdentityMatchError
	switch {
	case errors.As(err, &noMatch):
		return exitError{1, fmt.Sprintf("recover: the identity in %s does not open %s: the copy was encrypted to another recipient", *identity, *bundlePath)}
	case err != nil:
		return exitError{1, fmt.Sprintf("recover: %s is not a break-glass copy Keyward can read: %v", *bundlePath, err)}
	}
	var b bundle
	if err := json.NewDecoder(io.LimitReader(r, 1<<32)).Decode(&b); err != nil || b.Format != bundleFormat {
		return exitError{1, fmt.Sprintf("recover: %s opens but is not a break-glass copy (format %q): %v", *bundlePath, b.Format, err)}
	}
	var found int
	for _, k := range b.Keys {
		if !strings.HasPrefix(k.KeyID, prefix) {
			continue
		}
		found++
		owner := ""
		if k.OwnerUPN != "" {
			owner = ", owner " + k.OwnerUPN
		}
		fmt.Fprintf(env.stdout, "Device %s (%s%s), volume %s %s, %s, escrowed %s\n", k.DeviceName, k.DeviceID, owner,
			strings.TrimSpace(k.MountPoint+" "+k.VolumeID), k.VolumeType, k.Status, k.EscrowedAt.Format(time.RFC3339))
		fmt.Fprintf(env.stdout, "Recovery key ID: %s\n", k.KeyID)
		if k.RecoveryKey != "" {
			fmt.Fprintf(env.stdout, "Recovery key (the .BEK file's key): %s\n\n", k.RecoveryKey)
		} else {
			fmt.Fprintf(env.stdout, "Recovery password: %s\n\n", k.RecoveryPassword)
		}
	}
	if found == 0 {
		return exitError{1, fmt.Sprintf("recover: no key in %s (%d keys, made %s) has an ID starting with %s", *bundlePath, len(b.Keys), b.CreatedAt.Format(time.RFC3339), prefix)}
	}
	if found > 1 {
		fmt.Fprintf(env.stderr, "%d keys match %s: compare the whole key ID on the recovery screen\n", found, prefix)
	}
	return nil
}
