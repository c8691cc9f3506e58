package bitlocker_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/agent/agenttest"
	"github.com/keyward/keyward/internal/agent/bitlocker"
)

// The recorded outputs come from windows-outputs.md beside the repository, read at test time.

// Recovery passwords printed in the recorded outputs; no error may repeat any of them.
var recordedPasswords = []string{
	"254793-568007-425557-712855-251119-474815-445082-696212", // 3a
	"463881-116138-212971-219626-306295-227139-146784-038038", // 2a
	"271733-258533-688985-480293-713394-034012-061963-682044", // 3b
}

// mustNotLeak fails if the error repeats a recovery password, hyphenated or plain, or any of its
// blocks.
func mustNotLeak(t *testing.T, err error, passwords ...string) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error() + fmt.Sprintf("%+v %#v", err, err)
	for _, pw := range append(passwords, recordedPasswords...) {
		for _, block := range append(strings.Split(pw, "-"), pw, strings.ReplaceAll(pw, "-", "")) {
			if strings.Contains(msg, block) {
				t.Fatalf("error %q repeats key material", msg)
			}
		}
	}
}

func TestParseVolumesJSONRecorded(t *testing.T) {
	vols, err := bitlocker.ParseVolumesJSON([]byte(agenttest.Output(t, "3a", 0)))
	if err != nil {
		t.Fatal(err)
	}
	want := []bitlocker.Volume{
		{ID: "C:", MountPoint: "C:", Type: bitlocker.OperatingSystem, ProtectionStatus: bitlocker.ProtectionOn,
			EncryptionStatus: bitlocker.FullyEncrypted, Protectors: []bitlocker.Protector{
				{KeyID: "8A696888-99A7-4FAC-92C7-6CC497EA7BDF", Type: bitlocker.RecoveryPassword},
				{KeyID: "3B3E091C-ECB9-4B46-9FDD-A9E699EC3C8C", Type: bitlocker.TPM}}},
		{ID: "E:", MountPoint: "E:", Type: bitlocker.FixedData, ProtectionStatus: bitlocker.ProtectionOff,
			EncryptionStatus: bitlocker.FullyDecrypted},
	}
	if fmt.Sprint(vols) != fmt.Sprint(want) {
		t.Fatalf("volumes\n got %+v\nwant %+v", vols, want)
	}
	if !vols[0].Encrypted() || vols[1].Encrypted() {
		t.Fatal("Encrypted: C: is, E: is not")
	}
}

// enumsAsStrings rewrites the recorded integer-enum JSON the way `ConvertTo-Json
// -EnumsAsStrings` (PowerShell 7) and the agent's own script print it: with names.
func enumsAsStrings(s string) string {
	for _, r := range [][2]string{
		{`"VolumeStatus":  1`, `"VolumeStatus":  "FullyEncrypted"`},
		{`"VolumeStatus":  0`, `"VolumeStatus":  "FullyDecrypted"`},
		{`"ProtectionStatus":  1`, `"ProtectionStatus":  "On"`},
		{`"ProtectionStatus":  0`, `"ProtectionStatus":  "Off"`},
		{`"LockStatus":  0`, `"LockStatus":  "Unlocked"`},
		{`"VolumeType":  0`, `"VolumeType":  "OperatingSystem"`},
		{`"VolumeType":  1`, `"VolumeType":  "Data"`},
		{`"KeyProtectorType":  3`, `"KeyProtectorType":  "RecoveryPassword"`},
		{`"KeyProtectorType":  1`, `"KeyProtectorType":  "Tpm"`},
	} {
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	return s
}

func TestParseVolumesJSONForms(t *testing.T) {
	recorded := agenttest.Output(t, "3a", 0)
	ints, err := bitlocker.ParseVolumesJSON([]byte(recorded))
	if err != nil {
		t.Fatal(err)
	}
	single := recorded[strings.Index(recorded, "{") : strings.Index(recorded, "}, {")+1]
	tests := []struct {
		name string
		in   string
		want []bitlocker.Volume
	}{
		{"names instead of numbers", enumsAsStrings(recorded), ints},
		{"one volume is an object, not an array", single, ints[:1]},
		{"CRLF line ends and a byte order mark", "\xef\xbb\xbf" + strings.ReplaceAll(recorded, "\n", "\r\n"), ints},
		{"the agent's projection with VolumeId", `[{"VolumeId":"\\\\?\\Volume{6a3c0c6e-1d1f-4b0e-9a4e-3c7f0c5d8e21}\\","MountPoint":"C:",
			"VolumeType":0,"VolumeStatus":"EncryptionInProgress","ProtectionStatus":"Off","LockStatus":"Unlocked",
			"KeyProtector":{"KeyProtectorId":"{8A696888-99A7-4FAC-92C7-6CC497EA7BDF}","KeyProtectorType":"RecoveryPassword"}}]`,
			[]bitlocker.Volume{{ID: `\\?\Volume{6a3c0c6e-1d1f-4b0e-9a4e-3c7f0c5d8e21}\`, MountPoint: "C:", Type: bitlocker.OperatingSystem,
				ProtectionStatus: bitlocker.ProtectionOff, EncryptionStatus: bitlocker.EncryptionInProgress,
				Protectors: []bitlocker.Protector{{KeyID: "8A696888-99A7-4FAC-92C7-6CC497EA7BDF", Type: bitlocker.RecoveryPassword}}}}},
		{"locked volume: Windows gives no status", `{"MountPoint":"F:","VolumeType":1,"VolumeStatus":null,"ProtectionStatus":2,"LockStatus":1,
			"KeyProtector":[{"KeyProtectorId":"{08F750D7-0483-4F0E-847B-174119BD2896}","KeyProtectorType":2}]}`,
			[]bitlocker.Volume{{ID: "F:", MountPoint: "F:", Type: bitlocker.FixedData, ProtectionStatus: bitlocker.ProtectionUnknown, Locked: true,
				Protectors: []bitlocker.Protector{{KeyID: "08F750D7-0483-4F0E-847B-174119BD2896", Type: bitlocker.ExternalKey}}}}},
		{"suspended names and wipe states", `[{"MountPoint":"C:","VolumeType":"OperatingSystem","VolumeStatus":"EncryptionSuspended","ProtectionStatus":"Off"},
			{"MountPoint":"D:","VolumeType":"Removable","VolumeStatus":"FullyEncryptedWipeInProgress","ProtectionStatus":"On"}]`,
			[]bitlocker.Volume{
				{ID: "C:", MountPoint: "C:", Type: bitlocker.OperatingSystem, ProtectionStatus: bitlocker.ProtectionOff, EncryptionStatus: bitlocker.EncryptionPaused},
				{ID: "D:", MountPoint: "D:", Type: bitlocker.Removable, ProtectionStatus: bitlocker.ProtectionOn, EncryptionStatus: bitlocker.FullyEncrypted}}},
		{"no volumes", `[]`, []bitlocker.Volume{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bitlocker.ParseVolumesJSON([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseVolumesJSONRejectsDamaged(t *testing.T) {
	recorded := agenttest.Output(t, "3a", 0)
	tests := []struct {
		name string
		in   string
		want string // a substring of the error
	}{
		{"empty", "", "empty"},
		{"not JSON", "Get-BitLockerVolume : Access denied", "not valid JSON"},
		{"cut off", recorded[:len(recorded)/2], "ends early"},
		{"a string at the top", `"C:"`, "want a JSON object or array"},
		{"VolumeStatus out of range", strings.Replace(recorded, `"VolumeStatus":  1`, `"VolumeStatus":  9`, 1), "volume 1 (C:): VolumeStatus: unknown value 9"},
		{"VolumeStatus unknown name", enumsAsStrings(strings.Replace(recorded, `"VolumeStatus":  1`, `"VolumeStatus":  "Sideways"`, 1)), `VolumeStatus: unknown value "Sideways"`},
		{"ProtectionStatus out of range", strings.Replace(recorded, `"ProtectionStatus":  0`, `"ProtectionStatus":  3`, 1), "volume 2 (E:): ProtectionStatus: unknown value 3"},
		{"VolumeType negative", strings.Replace(recorded, `"VolumeType":  1`, `"VolumeType":  -1`, 1), "VolumeType: unknown value -1"},
		{"VolumeType missing", strings.Replace(recorded, `"VolumeType":  0,`, ``, 1), "VolumeType: missing"},
		{"KeyProtectorType out of range", strings.Replace(recorded, `"KeyProtectorType":  1`, `"KeyProtectorType":  42`, 1), "KeyProtector 2: 3B3E091C-ECB9-4B46-9FDD-A9E699EC3C8C: KeyProtectorType: unknown value 42"},
		{"KeyProtectorType a fraction", strings.Replace(recorded, `"KeyProtectorType":  1`, `"KeyProtectorType":  1.5`, 1), "KeyProtectorType: must be a number or a name"},
		{"key protector ID not a GUID", strings.Replace(recorded, `{3B3E091C-ECB9-4B46-9FDD-A9E699EC3C8C}`, `{3B3E091C-ECB9-4B46-9FDD}`, 1), "KeyProtector 2: KeyProtectorId: key protector ID is not a GUID"},
		{"protectors written as type names (ConvertTo-Json without -Depth)", `{"MountPoint":"C:","VolumeType":0,"VolumeStatus":1,"ProtectionStatus":1,"KeyProtector":["Tpm","RecoveryPassword"]}`, "-Depth 4"},
		{"mount point missing", `{"VolumeType":0,"VolumeStatus":1,"ProtectionStatus":1}`, "volume 1: MountPoint: missing"},
		{"mount point a number", `{"MountPoint":3,"VolumeType":0,"VolumeStatus":1,"ProtectionStatus":1}`, "MountPoint: must be a string"},
		{"volume listed twice", `[{"MountPoint":"C:","VolumeType":0,"VolumeStatus":1,"ProtectionStatus":1},{"MountPoint":"C:","VolumeType":0,"VolumeStatus":1,"ProtectionStatus":1}]`, "listed twice"},
		{"password where an enum belongs", strings.Replace(recorded, `"VolumeStatus":  1`, `"VolumeStatus":  "254793-568007-425557-712855-251119-474815-445082-696212"`, 1), "VolumeStatus: unknown value a string of 55 characters"},
		{"password digits as a number", strings.Replace(recorded, `"VolumeStatus":  1`, `"VolumeStatus":  254793568007425557712855251119474815445082696212`, 1), "VolumeStatus: must be a number or a name, got a value of 48 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bitlocker.ParseVolumesJSON([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			mustNotLeak(t, err)
		})
	}
}

// Every cut of the recorded output is refused, and no error repeats the password in it.
func TestParseJSONEveryTruncation(t *testing.T) {
	recorded := agenttest.Output(t, "3a", 0)
	end := strings.LastIndex(recorded, "]")
	for n := 0; n < end; n++ {
		in := []byte(recorded[:n])
		if _, err := bitlocker.ParseVolumesJSON(in); err == nil {
			t.Fatalf("the first %d bytes parsed as volumes", n)
		}
		_, err := bitlocker.ParseProtectorsJSON(in)
		if err == nil {
			t.Fatalf("the first %d bytes parsed as protectors", n)
		}
		mustNotLeak(t, err)
	}
}

func TestParseProtectorsJSON(t *testing.T) {
	got, err := bitlocker.ParseProtectorsJSON([]byte(agenttest.Output(t, "3a", 0)))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].KeyID != "8A696888-99A7-4FAC-92C7-6CC497EA7BDF" || got[0].Type != bitlocker.RecoveryPassword ||
		got[0].RecoveryPassword != recordedPasswords[0] || got[1].Type != bitlocker.TPM || got[1].RecoveryPassword != "" {
		t.Fatalf("protectors %+v", got)
	}
	// A detail printed by mistake carries no material.
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(verb, got[0]); strings.Contains(s, "254793") || !strings.Contains(s, "8A696888") {
			t.Fatalf("%s prints %q", verb, s)
		}
	}

	bad := []struct {
		name, in, want string
	}{
		{"checksum", strings.Replace(agenttest.Output(t, "3a", 0), "445082-696212", "445082-696213", 1), "8A696888-99A7-4FAC-92C7-6CC497EA7BDF: recovery password block 8 is not a multiple of 11"},
		{"5-digit blocks (a redacted doc example)", `{"KeyProtectorId":"{26935AC3-8B17-482D-BA3F-D373C7954D29}","KeyProtectorType":3,"RecoveryPassword":"393943-22222-281721-555554-577984-77777-194700-99999"}`, "block 2 has 5 digits"},
		{"password on a TPM protector", `{"KeyProtectorId":"{26935AC3-8B17-482D-BA3F-D373C7954D29}","KeyProtectorType":1,"RecoveryPassword":"271733-258533-688985-480293-713394-034012-061963-682044"}`, "a tpm protector with a recovery password"},
		{"password as a number", `{"KeyProtectorId":"{26935AC3-8B17-482D-BA3F-D373C7954D29}","KeyProtectorType":3,"RecoveryPassword":271733258533688985480293713394034012061963682044}`, "RecoveryPassword: must be a string, got a value of 48 characters"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bitlocker.ParseProtectorsJSON([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			mustNotLeak(t, err, "393943-22222-281721-555554-577984-77777-194700-99999", "254793-568007-425557-712855-251119-474815-445082-696213")
		})
	}
}

func TestParseProtectorList(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []bitlocker.ProtectorDetail
	}{
		{"3b recovery password (doc spacing)", agenttest.Output(t, "3b", 0), []bitlocker.ProtectorDetail{{
			Protector:        bitlocker.Protector{KeyID: "26935AC3-8B17-482D-BA3F-D373C7954D29", Type: bitlocker.RecoveryPassword},
			RecoveryPassword: recordedPasswords[2]}}},
		{"3c external key", agenttest.Output(t, "3c", 0), []bitlocker.ProtectorDetail{{
			Protector:   bitlocker.Protector{KeyID: "F03EB4C1-073C-4E41-B43E-B9298B6B27EC", Type: bitlocker.ExternalKey},
			KeyFileName: "F03EB4C1-073C-4E41-B43E-B9298B6B27EC.BEK"}}},
		{"both, with PowerShell's aligned padding", padded(agenttest.Output(t, "3b", 0)) + "\n" + padded(agenttest.Output(t, "3c", 0)), []bitlocker.ProtectorDetail{
			{Protector: bitlocker.Protector{KeyID: "26935AC3-8B17-482D-BA3F-D373C7954D29", Type: bitlocker.RecoveryPassword}, RecoveryPassword: recordedPasswords[2]},
			{Protector: bitlocker.Protector{KeyID: "F03EB4C1-073C-4E41-B43E-B9298B6B27EC", Type: bitlocker.ExternalKey}, KeyFileName: "F03EB4C1-073C-4E41-B43E-B9298B6B27EC.BEK"}}},
		{"the agent's script: numeric type and an external key", "KeyProtectorId : {F03EB4C1-073C-4E41-B43E-B9298B6B27EC}\r\nKeyProtectorType : 2\r\nExternalKey : " + strings.Repeat("0A", 32) + "\r\n",
			[]bitlocker.ProtectorDetail{{Protector: bitlocker.Protector{KeyID: "F03EB4C1-073C-4E41-B43E-B9298B6B27EC", Type: bitlocker.ExternalKey},
				ExternalKey: [32]byte{10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10}, HasExternalKey: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bitlocker.ParseProtectorList(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}

	bad := []struct{ name, in, want string }{
		{"nothing", "", "no KeyProtectorId line"},
		{"cut before the type", "KeyProtectorId : {26935AC3-8B17-482D-BA3F-D373C7954D29}\nAutoUnlockProtector :\n", "KeyProtectorType: missing"},
		{"unknown type", strings.Replace(agenttest.Output(t, "3b", 0), "RecoveryPassword\n", "Sideways\n", 1), `unknown value "Sideways"`},
		{"bad password", strings.Replace(agenttest.Output(t, "3b", 0), "271733-", "271734-", 1), "26935AC3-8B17-482D-BA3F-D373C7954D29: recovery password block 1 is not a multiple of 11"},
		{"property twice", agenttest.Output(t, "3b", 0) + "RecoveryPassword : " + recordedPasswords[2] + "\n", "given twice"},
		{"external key too short", "KeyProtectorId : {F03EB4C1-073C-4E41-B43E-B9298B6B27EC}\nKeyProtectorType : ExternalKey\nExternalKey : 0A0A\n", "ExternalKey: must be 64 hex digits"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bitlocker.ParseProtectorList(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			mustNotLeak(t, err, "271734-258533-688985-480293-713394-034012-061963-682044")
		})
	}
}

var listLine = regexp.MustCompile(`(?m)^(\w+) :`)

// padded restores PowerShell's aligned Format-List padding, which the recorded doc collapsed.
func padded(s string) string {
	return listLine.ReplaceAllStringFunc(s, func(m string) string {
		name := strings.TrimSuffix(m, " :")
		return name + strings.Repeat(" ", 20-len(name)) + ":"
	})
}

func TestParseManageBDEProtectors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []bitlocker.ProtectorDetail
	}{
		{"2a recovery password and password", agenttest.Output(t, "2a", 0), []bitlocker.ProtectorDetail{
			{Protector: bitlocker.Protector{KeyID: "89701158-94B4-42D2-87EB-82B8A03E45CD", Type: bitlocker.RecoveryPassword}, RecoveryPassword: recordedPasswords[1]},
			{Protector: bitlocker.Protector{KeyID: "B1129007-8A8C-4398-BC67-0F608F771ABD", Type: bitlocker.Other}}}},
		{"2b external key of a locked volume", agenttest.Output(t, "2b", 0), []bitlocker.ProtectorDetail{
			{Protector: bitlocker.Protector{KeyID: "08F750D7-0483-4F0E-847B-174119BD2896", Type: bitlocker.ExternalKey}, KeyFileName: "08F750D7-0483-4F0E-847B-174119BD2896.BEK"}}},
		{"2c German, TPM only", agenttest.Output(t, "2c", 0), []bitlocker.ProtectorDetail{
			{Protector: bitlocker.Protector{KeyID: "53465F4B-98AB-45E2-823D-1F93C0911081", Type: bitlocker.TPM}}}},
		{"2a relabelled in German", germanLabels(agenttest.Output(t, "2a", 0)), []bitlocker.ProtectorDetail{
			{Protector: bitlocker.Protector{KeyID: "89701158-94B4-42D2-87EB-82B8A03E45CD", Type: bitlocker.RecoveryPassword}, RecoveryPassword: recordedPasswords[1]},
			{Protector: bitlocker.Protector{KeyID: "B1129007-8A8C-4398-BC67-0F608F771ABD", Type: bitlocker.Other}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bitlocker.ParseManageBDEProtectors(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}

	redacted := agenttest.Output(t, "2d", 0)
	bad := []struct{ name, in, want string }{
		{"2d x'ed-out paste", redacted, "line 5: key protector ID is not a GUID"},
		{"2d with the ID repaired: the x'ed password", strings.Replace(redacted, "{5Fxxxx8-7xx0-4xx1-9xx0-76xxxxxxx30}", "{5F000008-7000-4001-9000-760000000030}", 1), "line 7: 5F000008-7000-4001-9000-760000000030: recovery password block 1 contains a character that is not a digit"},
		{"2d with both IDs repaired: the x'ed key file", strings.NewReplacer("{5Fxxxx8-7xx0-4xx1-9xx0-76xxxxxxx30}", "{5F000008-7000-4001-9000-760000000030}",
			"1xxx8-2xxx2-3xxx8-1xxx6-0xxxx0-3xxx2-0xxx1-6xxx5", recordedPasswords[1], "{7CD4BD8B-56E0-4F1F-BA0E-3BCxxxxxx55}", "{7CD4BD8B-56E0-4F1F-BA0E-3BC000000055}").Replace(redacted), "line 11: external key file name is not GUID.BEK"},
		{"status output, not protectors", agenttest.Output(t, "1a", 0), "no key protector"},
		{"password before any ID", "Numerical Password:\n  " + recordedPasswords[1] + "\n", "line 2: a recovery password before any protector ID"},
		{"two passwords for one protector", strings.Replace(agenttest.Output(t, "2a", 0), recordedPasswords[1], recordedPasswords[1]+"\n"+recordedPasswords[0], 1), "line 12: 89701158-94B4-42D2-87EB-82B8A03E45CD has two recovery passwords"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bitlocker.ParseManageBDEProtectors(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			mustNotLeak(t, err, "1xxx8-2xxx2-3xxx8-1xxx6-0xxxx0-3xxx2-0xxx1-6xxx5")
		})
	}
}

// germanLabels translates the labels of 2a as de-DE Windows prints them, to show that the
// parser does not depend on them.
func germanLabels(s string) string {
	return strings.NewReplacer("All Key Protectors", "Alle Schlüsselschutzvorrichtungen", "Numerical Password:", "Numerisches Kennwort:",
		"Password:", "Kennwort:", "ID:", "Kennung:").Replace(s)
}

// TestEveryRecordedOutputIsClassified holds the table of what each recorded block is: a
// sample added to windows-outputs.md must be given a parser (or a reason it has none) here.
func TestEveryRecordedOutputIsClassified(t *testing.T) {
	parsers := map[string]func(string) error{
		"volumes JSON":   func(s string) error { _, err := bitlocker.ParseVolumesJSON([]byte(s)); return err },
		"protector list": func(s string) error { _, err := bitlocker.ParseProtectorList(s); return err },
		"manage-bde":     func(s string) error { _, err := bitlocker.ParseManageBDEProtectors(s); return err },
	}
	// section -> the parser that must accept it, and whether it must refuse it instead (a damaged
	// sample). manage-bde -status output (§1) is localized and has no protector IDs: the agent
	// reads status through Get-BitLockerVolume, so the protector parser must refuse it.
	kinds := map[string]struct {
		parser string
		refuse bool
	}{
		"1a": {"manage-bde", true}, "1b": {"manage-bde", true}, "1c": {"manage-bde", true}, "1d": {"manage-bde", true},
		"2a": {"manage-bde", false}, "2b": {"manage-bde", false}, "2c": {"manage-bde", false}, "2d": {"manage-bde", true},
		"3a": {"volumes JSON", false}, "3b": {"protector list", false}, "3c": {"protector list", false},
	}
	for _, b := range agenttest.WindowsOutputs(t) {
		t.Run(fmt.Sprintf("%s-%d", b.Section, b.Index), func(t *testing.T) {
			k, ok := kinds[b.Section]
			if !ok {
				t.Fatalf("section %s (%s) is not classified in this test", b.Section, b.Title)
			}
			err := parsers[k.parser](b.Text)
			if k.refuse != (err != nil) {
				t.Fatalf("%s parser on %s: error %v, want refused=%v", k.parser, b.Section, err, k.refuse)
			}
			mustNotLeak(t, err)
			// JSON is never read as text, nor text as JSON. (A Format-List of protectors has
			// the shape of manage-bde's list, and reads the same through either parser.)
			json := k.parser == "volumes JSON"
			for name, p := range parsers {
				if (name == "volumes JSON") != json && p(b.Text) == nil {
					t.Errorf("%s parser accepted the %s sample %s", name, k.parser, b.Section)
				}
			}
		})
	}
}

func TestParseRecoveryEventsJSON(t *testing.T) {
	at := time.Date(2026, 3, 9, 9, 6, 10, 500000000, time.UTC)
	tests := []struct {
		name string
		in   string
		want []bitlocker.RecoveryUnlock
	}{
		{"the agent's script", `[{"Id":24652,"TimeCreated":"2026-03-09T09:06:10.5000000Z","Data":["0xC0210000","","0x00000000","{316A9DD0-5D5D-48FB-A2E8-0A02BB08701C}","{e7e48bae-ff13-4f14-8222-971d469fae0d}","0x00000002"]}]`,
			[]bitlocker.RecoveryUnlock{{Time: at, EventID: 24652, GUIDs: []string{"316A9DD0-5D5D-48FB-A2E8-0A02BB08701C", "E7E48BAE-FF13-4F14-8222-971D469FAE0D"}}}},
		{"Get-WinEvent | ConvertTo-Json in Windows PowerShell", `{"Id":782,"TimeCreated":"\/Date(1773047170500)\/","Properties":[{"Value":"{11111111-2222-3333-4444-555555555555}"},{"Value":"\\\\?\\Volume{01234567-0000-0000-0000-010000000000}"},{"Value":"X:"},{"Value":"{E7E48BAE-FF13-4F14-8222-971D469FAE0D}"}]}`,
			[]bitlocker.RecoveryUnlock{{Time: at, EventID: 782, GUIDs: []string{"11111111-2222-3333-4444-555555555555", "01234567-0000-0000-0000-010000000000", "E7E48BAE-FF13-4F14-8222-971D469FAE0D"}}}},
		{"data wrapped as value and Count", `[{"Id":24654,"TimeCreated":"2026-03-09T09:06:10.5Z","Data":{"value":["{E7E48BAE-FF13-4F14-8222-971D469FAE0D}"],"Count":1}}]`,
			[]bitlocker.RecoveryUnlock{{Time: at, EventID: 24654, GUIDs: []string{"E7E48BAE-FF13-4F14-8222-971D469FAE0D"}}}},
		{"no events", `[]`, []bitlocker.RecoveryUnlock{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bitlocker.ParseRecoveryEventsJSON([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
	for name, in := range map[string]string{
		"cut off":       `[{"Id":24652,"TimeCreated":"2026-03-09T09:06:10Z","Data":["{E7E48BAE-FF13`,
		"no Id":         `[{"TimeCreated":"2026-03-09T09:06:10Z","Data":[]}]`,
		"bad time":      `[{"Id":24652,"TimeCreated":"yesterday","Data":[]}]`,
		"data not text": `[{"Id":24652,"TimeCreated":"2026-03-09T09:06:10Z","Data":[1,2]}]`,
	} {
		if _, err := bitlocker.ParseRecoveryEventsJSON([]byte(in)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}
