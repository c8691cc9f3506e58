package agent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/agent/wire"
)

// DeviceInfo describes the device to the server at enrollment.
type DeviceInfo struct {
	Hostname     string
	SerialNumber string
	OSVersion    string
}

// EnrollOptions is what enrollment needs.
type EnrollOptions struct {
	StateDir  string
	ServerURL string
	Token     string // the enrollment token
	OwnerUPN  string // the user the device belongs to, optional
	CAFile    string // PEM certificates of a private CA, optional
	Force     bool   // enroll again over an existing enrollment
	Info      DeviceInfo
	Version   string
	Transport http.RoundTripper
	Now       func() time.Time
}

// Enroll registers the device with the server and writes a new state file. It refuses to
// replace an existing enrollment without Force: the old device's keys stay on the server under
// the old device ID, and a second enrollment by mistake would split the device's history.
func Enroll(ctx context.Context, o EnrollOptions) (deviceID string, err error) {
	base, err := checkServerURL(o.ServerURL)
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(o.Token) == "" {
		return "", errors.New("no enrollment token given")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if err := prepareStateDir(o.StateDir); err != nil {
		return "", err
	}
	lock, err := lockStateDir(o.StateDir)
	if err != nil {
		return "", err
	}
	if lock != nil {
		defer lock.Close()
	}
	if old, err := readState(o.StateDir); err == nil && !o.Force {
		return "", fmt.Errorf("already enrolled as device %s with %s; use --force to enroll again", old.DeviceID, old.ServerURL)
	} else if err != nil && !errors.Is(err, ErrNotEnrolled) && !o.Force {
		return "", err
	}
	hc, err := newHTTPClient(o.CAFile, o.Transport)
	if err != nil {
		return "", err
	}
	c := &client{base: base, http: hc, userAgent: "keyward-agent/" + o.Version}
	res, err := c.enroll(ctx, wire.EnrollRequest{
		EnrollmentToken: strings.TrimSpace(o.Token), Hostname: o.Info.Hostname, SerialNumber: o.Info.SerialNumber,
		OSVersion: o.Info.OSVersion, OwnerUPN: o.OwnerUPN,
	})
	var ae *APIError
	if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
		return "", errors.New("the server refused the enrollment token: it is not valid, used up, expired or revoked")
	}
	if err != nil {
		return "", fmt.Errorf("enrolling: %w", err)
	}
	vk, err := base64.StdEncoding.DecodeString(res.VerificationKey)
	if res.DeviceID == "" || res.DeviceToken == "" || err != nil || len(vk) != 32 {
		return "", errors.New("enrolling: the server's answer lacks the device ID, token or verification key")
	}
	clear(vk)
	caFile := ""
	if o.CAFile != "" {
		// The file was read and parsed above (newHTTPClient); the copy is what the service uses.
		b, err := os.ReadFile(o.CAFile)
		if err != nil {
			return "", fmt.Errorf("copying the CA file: %w", err)
		}
		if err := writeFileAtomic(o.StateDir, caFileName, b); err != nil {
			return "", fmt.Errorf("copying the CA file into the state directory: %w", err)
		}
		if caFile, err = filepath.Abs(filepath.Join(o.StateDir, caFileName)); err != nil {
			return "", err
		}
	}
	st := &State{
		ServerURL: base.String(), CAFile: caFile, DeviceID: res.DeviceID, DeviceToken: res.DeviceToken,
		VerificationKey: res.VerificationKey, EnrolledAt: o.Now().UTC(), Acknowledged: []string{},
	}
	if err := writeState(o.StateDir, st); err != nil {
		return "", err
	}
	return res.DeviceID, nil
}
