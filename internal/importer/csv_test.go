package importer_test

import (
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/importer"
)

const pw = "235818-357951-253979-013365-241120-245575-342914-591910"

func readCSV(t *testing.T, text string) ([]escrow.ImportRecord, error) {
	t.Helper()
	var out []escrow.ImportRecord
	err := importer.ReadCSV(strings.NewReader(text), func(r escrow.ImportRecord) error {
		out = append(out, r)
		return nil
	})
	return out, err
}

func utf16LE(s string) string {
	var b []byte
	for _, u := range append([]uint16{0xFEFF}, utf16.Encode([]rune(s))...) {
		b = append(b, byte(u), byte(u>>8))
	}
	return string(b)
}

func TestReadCSV(t *testing.T) {
	keyward := "hostname,keyId,recoveryPassword,ownerUpn,volumeType\nLT-0042,64311DEA-4587-4029-924A-BA299647998E," + pw + ",alice@example.com,fixedData\n"
	crowdstrike := "\"Hostname\",\"KeyID\",\"RecoveryKey\"\r\n\"LT-0042\",\"{64311dea-4587-4029-924a-ba299647998e}\",\"" + pw + "\"\r\n"
	powershell := "#TYPE System.Management.Automation.PSCustomObject\r\n\"ComputerName\",\"RecoveryGuid\",\"RecoveryPassword\",\"whenCreated\"\r\n\"LT-0042\",\"64311DEA-4587-4029-924A-BA299647998E\",\"" + pw + "\",\"2024-07-19T04:09:00Z\"\r\n"
	tests := []struct {
		name string
		text string
		want escrow.ImportRecord
	}{
		{"keyward", keyward, escrow.ImportRecord{Position: "line 2", Hostname: "LT-0042", KeyID: "64311DEA-4587-4029-924A-BA299647998E", Password: pw,
			OwnerUPN: "alice@example.com", VolumeType: escrow.VolumeFixedData}},
		{"crowdstrike with a byte-order mark", "\ufeff" + crowdstrike, escrow.ImportRecord{Position: "line 2", Hostname: "LT-0042", KeyID: "{64311dea-4587-4029-924a-ba299647998e}", Password: pw}},
		{"windows powershell utf-16", utf16LE(powershell), escrow.ImportRecord{Position: "line 3", Hostname: "LT-0042", KeyID: "64311DEA-4587-4029-924A-BA299647998E", Password: pw,
			CreatedAt: time.Date(2024, 7, 19, 4, 9, 0, 0, time.UTC)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readCSV(t, tt.text)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0] != tt.want {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestReadCSVRefusals(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"empty", "", "no header row"},
		{"no password column", "hostname,keyId\nLT-1,64311DEA-4587-4029-924A-BA299647998E\n", "no password column"},
		{"broken quoting", "hostname,keyId,recoveryPassword\n\"LT-1,\"x\"" + pw + "\n", "line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readCSV(t, tt.text)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to say %q", err, tt.want)
			}
			if strings.Contains(err.Error(), pw[:6]) {
				t.Fatalf("error %q quotes the file", err)
			}
		})
	}
	// A short row is passed on, for the store to name its line and missing field.
	got, err := readCSV(t, "hostname,keyId,recoveryPassword\nLT-1\n\nLT-2,64311DEA-4587-4029-924A-BA299647998E,"+pw+"\n")
	if err != nil || len(got) != 2 || got[0].Position != "line 2" || got[0].Password != "" || got[1].Position != "line 4" {
		t.Fatalf("got %+v, %v", got, err)
	}
}
