package main

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/escrow"
	"github.com/keyward/keyward/internal/recovery"
	"github.com/keyward/keyward/internal/store"
)

// The shares of the fleet in each situation, as a cumulative table: a large organisation's
// fleet on an ordinary day. Most devices are escrowed; the rest are the cases the escrow
// report exists for.
var kinds = []struct {
	upTo float64
	kind string
}{
	{0.040, "notAvailable"},       // BitLocker off on every volume
	{0.060, "pending:new"},        // enrolled, not reported yet
	{0.080, "pending:encrypting"}, // encrypting, key not escrowed yet, within the grace period
	{0.095, "pending:rotation"},   // escrowed, a rotation requested and not finished
	{0.115, "failed:reported"},    // the agent reported a failed escrow
	{0.125, "failed:mismatch"},    // the held password is not the one on the volume
	{0.150, "failed:missing"},     // encrypted, no key escrowed for longer than the grace period
	{1, "escrowed"},
}

var (
	firstNames = strings.Fields("alice bob carla david emma farid greta hugo ines jonas karin liam maria nils olga pavel quinn rosa sven tara ugo vera wim xenia yusuf zoe")
	lastNames  = strings.Fields("smith meier novak rossi garcia kowalski jensen dubois silva berg lindqvist muller costa horvat nagy popescu ivanova tanaka kim okafor")
	sites      = strings.Fields("BER MUC HAM FRA LON PAR MAD MIL WAW STO AMS VIE")
	depts      = strings.Fields("finance sales engineering support hr legal marketing operations it research")
	osVersions = strings.Fields("10.0.19045 10.0.22631 10.0.26100")
)

// fleet generates devices deterministically from a seed: the same seed and start give the
// same fleet.
type fleet struct {
	rng *rand.Rand
	pw  *rand.ChaCha8 // the recovery passwords' randomness
	now time.Time
}

func newFleet(seed uint64, start int, now time.Time) *fleet {
	var key [32]byte
	copy(key[:], fmt.Sprintf("keyward-bench %d %d", seed, start))
	return &fleet{rng: rand.New(rand.NewPCG(seed, uint64(start))), pw: rand.NewChaCha8(key), now: now}
}

func (f *fleet) uuid() string {
	b := make([]byte, 16)
	for i := range b {
		b[i] = byte(f.rng.Uint32())
	}
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return strings.ToUpper(fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]))
}

// ago returns a random instant between from and to before now.
func (f *fleet) ago(from, to time.Duration) time.Time {
	return f.now.Add(-from - time.Duration(f.rng.Int64N(int64(to-from))))
}

// owner returns device i's owner: most people have one device, one in five a second (a
// laptop and a desktop, or a replacement not yet retired), a few IT staff many, and shared
// machines none.
func (f *fleet) owner(i int) string {
	var person int
	switch r := f.rng.Float64(); {
	case r < 0.03:
		return ""
	case r < 0.05:
		person = f.rng.IntN(50) // IT staff
	case r < 0.25 && i > 0:
		person = f.rng.IntN(i) // someone's second device
	default:
		person = i
	}
	upn := fmt.Sprintf("%s.%s%d@example.com", firstNames[person%len(firstNames)], lastNames[person/len(firstNames)%len(lastNames)], person)
	if person%10 == 0 {
		// Directories hand out names with capitals too; sign-in names compare without case.
		upn = strings.ToUpper(upn[:1]) + upn[1:]
	}
	return upn
}

func (f *fleet) name(i int) string {
	if f.rng.IntN(5) < 2 {
		const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
		b := make([]byte, 7)
		for j := range b {
			b[j] = alnum[f.rng.IntN(len(alnum))]
		}
		return []string{"DESKTOP-", "LAPTOP-"}[f.rng.IntN(2)] + string(b)
	}
	return fmt.Sprintf("%s-%s-%06d", sites[f.rng.IntN(len(sites))], []string{"LT", "DT"}[f.rng.IntN(2)], i)
}

func (f *fleet) key(created time.Time) store.SeedKey {
	pw, err := recovery.GeneratePassword(f.pw)
	if err != nil {
		panic(err) // ChaCha8 never fails to read
	}
	v := escrow.Verified
	if f.rng.IntN(20) == 0 {
		v = escrow.Unverified
	}
	return store.SeedKey{KeyID: f.uuid(), Password: pw, CreatedAt: created, Verification: v}
}

// device returns device i of the fleet and the situation it is in.
func (f *fleet) device(i int) (store.SeedDevice, string) {
	r := f.rng.Float64()
	kind := "escrowed"
	for _, k := range kinds {
		if r < k.upTo {
			kind = k.kind
			break
		}
	}
	enrolled := f.ago(24*time.Hour, 730*24*time.Hour)
	seen := f.ago(0, 72*time.Hour)
	if f.rng.IntN(20) == 0 {
		seen = f.ago(3*24*time.Hour, 90*24*time.Hour) // off, travelling, in a drawer
	}
	d := store.SeedDevice{
		Name: f.name(i), OwnerUPN: f.owner(i), SerialNumber: fmt.Sprintf("SN%010d", f.rng.Uint32()),
		OSVersion: osVersions[f.rng.IntN(len(osVersions))], EnrolledAt: enrolled, LastSeenAt: seen, ReportedAt: seen,
		Tags: []string{"site:" + strings.ToLower(sites[f.rng.IntN(len(sites))])},
	}
	if f.rng.IntN(10) < 7 {
		d.Tags = append(d.Tags, "dept:"+depts[f.rng.IntN(len(depts))])
	}
	if kind == "pending:new" {
		d.EnrolledAt = f.ago(0, 12*time.Hour)
		d.LastSeenAt, d.ReportedAt = d.EnrolledAt, time.Time{}
		return d, kind
	}
	if kind == "pending:encrypting" {
		d.LastSeenAt = f.ago(0, 20*time.Minute)
		d.ReportedAt = d.LastSeenAt
	}
	if d.ReportedAt.Before(d.EnrolledAt) {
		d.EnrolledAt = d.ReportedAt.Add(-time.Hour)
	}
	d.Volumes = append(d.Volumes, f.volume(kind, "C:", escrow.VolumeOperatingSystem, d.EnrolledAt))
	if f.rng.IntN(5) == 0 {
		data := kind
		if kind == "pending:rotation" || strings.HasPrefix(kind, "failed:") {
			data = "escrowed" // the status comes from the system drive
		}
		d.Volumes = append(d.Volumes, f.volume(data, "D:", escrow.VolumeFixedData, d.EnrolledAt))
	}
	return d, kind
}

func (f *fleet) volume(kind, mount string, vt escrow.VolumeType, enrolled time.Time) store.SeedVolume {
	v := store.SeedVolume{
		ID: `\\?\Volume{` + strings.ToLower(f.uuid()) + `}\`, MountPoint: mount, Type: vt,
		Protection: escrow.ProtectionOn, Encryption: escrow.FullyEncrypted,
	}
	if vt == escrow.VolumeOperatingSystem {
		v.Protectors = []escrow.Protector{{KeyID: f.uuid(), Type: escrow.ProtectorTPM}}
	}
	switch kind {
	case "notAvailable":
		v.Protection, v.Encryption, v.Protectors = escrow.ProtectionOff, escrow.FullyDecrypted, nil
		return v
	case "pending:encrypting":
		v.Protection, v.Encryption = escrow.ProtectionOff, escrow.EncryptionInProgress
		return v
	case "failed:reported":
		v.Failure, v.FailureAt = "escrowFailed: 0x80310000 the server could not be reached", f.ago(time.Hour, 10*24*time.Hour)
		return v
	case "failed:missing":
		return v
	}
	k := f.key(enrolled.Add(time.Duration(f.rng.Int64N(int64(f.now.Sub(enrolled))))))
	if kind == "failed:mismatch" {
		k.Verification = escrow.Mismatch
	}
	// One volume in seven was rotated in the last week: the key it replaced is kept until the
	// retention period (7 days) ends.
	if f.rng.IntN(7) == 0 {
		old := f.key(enrolled)
		old.Superseded, old.RetainUntil = true, f.now.Add(time.Duration(1+f.rng.IntN(6*24))*time.Hour)
		old.SupersededAt = old.RetainUntil.Add(-7 * 24 * time.Hour)
		k.CreatedAt = old.SupersededAt
		v.Keys = append(v.Keys, old)
	}
	v.Keys = append(v.Keys, k)
	v.RotationOpen = kind == "pending:rotation"
	return v
}
