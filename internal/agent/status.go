package agent

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Status is what `keyward-agent status` shows: what the agent knows from its state file. It
// holds no secret, neither key material nor the device's token or verification key.
type Status struct {
	DeviceID       string
	ServerURL      string
	EnrolledAt     time.Time
	LastReportAt   time.Time // zero before the first accepted report
	TokenRefusedAt time.Time // zero unless the server refused the device token since the last report
	Volumes        []VolumeSummary
	Acknowledged   []string // key IDs the server acknowledged
	Rotation       *RotationStep
}

// ReadStatus reads the status from a state directory. It takes no lock: the state file is
// replaced atomically, so a running agent never leaves half a file to read.
func ReadStatus(stateDir string) (Status, error) {
	st, err := readState(stateDir)
	if err != nil {
		return Status{}, err
	}
	s := Status{DeviceID: st.DeviceID, ServerURL: st.ServerURL, EnrolledAt: st.EnrolledAt, LastReportAt: st.LastReportAt,
		TokenRefusedAt: st.TokenRefusedAt, Volumes: st.Volumes, Acknowledged: st.Acknowledged}
	if st.Rotation != nil {
		r := *st.Rotation
		s.Rotation = &r
	}
	return s, nil
}

// Pending lists the work the agent has not finished: a rotation under way and recovery
// passwords that were on a volume at the last report and are not acknowledged by the server.
// (External keys are escrowed where Windows gives them out, which it need not.)
func (s Status) Pending() []string {
	var out []string
	if r := s.Rotation; r != nil {
		line := fmt.Sprintf("rotation %s of volume %s: next step %s", r.CommandID, r.VolumeID, r.Phase)
		if r.OldKeyID != "" {
			line += ", replacing " + r.OldKeyID
		}
		if r.NewKeyID != "" {
			line += ", new key " + r.NewKeyID
		}
		if r.Failure != "" {
			line += " (failed: " + r.Failure + ")"
		}
		out = append(out, line)
	}
	for _, v := range s.Volumes {
		for _, p := range v.Protectors {
			if p.Type == "recoveryPassword" && !slices.Contains(s.Acknowledged, p.KeyID) {
				out = append(out, fmt.Sprintf("escrow of %s %s on %s", p.Type, p.KeyID, v.MountPoint))
			}
		}
	}
	return out
}

// Write prints the status for a person.
func (s Status) Write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	when := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format(time.RFC3339)
	}
	fmt.Fprintf(tw, "Device:\t%s\n", s.DeviceID)
	fmt.Fprintf(tw, "Server:\t%s\n", s.ServerURL)
	fmt.Fprintf(tw, "Enrolled:\t%s\n", when(s.EnrolledAt))
	fmt.Fprintf(tw, "Last report:\t%s\n", when(s.LastReportAt))
	if !s.TokenRefusedAt.IsZero() {
		fmt.Fprintf(tw, "Token:\trefused by the server at %s: enroll again with --force\n", when(s.TokenRefusedAt))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "Volumes (as last reported):")
	if len(s.Volumes) == 0 {
		fmt.Fprintln(w, "  none")
	}
	for _, v := range s.Volumes {
		lock := ""
		if v.LockStatus == "locked" {
			lock = ", locked"
		}
		fmt.Fprintf(w, "  %s  %s  %s, protection %s, %s%s\n", v.MountPoint, v.VolumeID, v.VolumeType, v.ProtectionStatus, v.EncryptionStatus, lock)
		for _, p := range v.Protectors {
			escrow := ""
			if slices.Contains(s.Acknowledged, p.KeyID) {
				escrow = "  escrowed"
			}
			fmt.Fprintf(w, "    %-18s %s%s\n", p.Type, p.KeyID, escrow)
		}
	}
	fmt.Fprintln(w, "Acknowledged key IDs:")
	if len(s.Acknowledged) == 0 {
		fmt.Fprintln(w, "  none")
	}
	for _, id := range s.Acknowledged {
		fmt.Fprintf(w, "  %s\n", id)
	}
	fmt.Fprintln(w, "Pending work:")
	pending := s.Pending()
	if len(pending) == 0 {
		pending = []string{"none"}
	}
	_, err := fmt.Fprintln(w, "  "+strings.Join(pending, "\n  "))
	return err
}
