package store_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/escrow"
)

func TestExportKeys(t *testing.T) {
	e := newEnv(t)
	en := e.enroll("LT-0042", "alice@example.com")
	e.escrowPassword(en, osVolume, xts128)
	e.escrowPassword(en, osVolume, cbc128)
	e.escrowPassword(en, osVolume, genSample(9))
	// cbc128 leaves the volume: superseded and retained. genSample(9) is purged.
	e.report(en, escrow.Report{Volumes: []escrow.ReportedVolume{onVolume(osVolume, xts128.keyID, genSample(9).keyID)}})
	raw := e.raw()
	e.exec(raw, `UPDATE recovery_keys SET status = 'purged', ciphertext = NULL, wrapped_key = NULL WHERE key_id = $1`, genSample(9).keyID)
	if _, err := e.db.Import(e.ctx, cliOrigin, "csv keys.csv", []escrow.ImportRecord{{Position: "line 2", Hostname: "WS-1", KeyID: togo.keyID, Password: togo.password, OwnerUPN: "bob@example.com"}}, false); err != nil {
		t.Fatal(err)
	}

	collect := func(finish func() error) (map[string]escrow.ExportedKey, int, error) {
		got := map[string]escrow.ExportedKey{}
		n, err := e.db.ExportKeys(e.ctx, cliOrigin, "offline copy", "sha256:00", func(k escrow.ExportedKey) error {
			got[k.KeyID] = k
			return nil
		}, finish)
		return got, n, err
	}
	got, n, err := collect(func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || len(got) != 3 || got[xts128.keyID].Material != xts128.password || got[cbc128.keyID].Status != escrow.KeySuperseded ||
		got[togo.keyID].OwnerUPN != "bob@example.com" || got[togo.keyID].DeviceName != "WS-1" || got[xts128.keyID].OwnerUPN != "alice@example.com" {
		t.Fatalf("exported %d: %+v", n, got)
	}
	if _, ok := got[genSample(9).keyID]; ok {
		t.Error("a purged key was exported")
	}
	evs := e.events(escrow.AuditFilter{Action: escrow.ActionKeyExport})
	if len(evs) != 1 || evs[0].Reason != "offline copy" || !strings.Contains(evs[0].Detail, "3 keys") || !strings.Contains(evs[0].Detail, "sha256:00") {
		t.Fatalf("events %+v", evs)
	}

	// A copy that cannot be made durable is no disclosure; nor is one whose event fails.
	if _, _, err := collect(func() error { return errors.New("disk full") }); err == nil {
		t.Fatal("a failed finish was not an error")
	}
	e.failAuditWrites(raw, escrow.ActionKeyExport)
	_, _, err = collect(func() error { return nil })
	wantCode(t, err, escrow.CodeUnavailable)
	e.allowAuditWrites(raw)
	if n := e.countEvents(escrow.AuditFilter{Action: escrow.ActionKeyExport}); n != 1 {
		t.Fatalf("%d key.export events after two failed exports, want 1", n)
	}
	_, err = e.db.ExportKeys(e.ctx, cliOrigin, " ", "sha256:00", func(escrow.ExportedKey) error { return nil }, func() error { return nil })
	wantCode(t, err, escrow.CodeInvalid)
}
