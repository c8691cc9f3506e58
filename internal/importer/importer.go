// Package importer reads recovery passwords out of the places organisations kept them before
// Keyward: Active Directory (msFVE-RecoveryInformation objects over LDAP), Entra ID (Microsoft
// Graph's bitlocker recoveryKeys) and CSV files (the CrowdStrike export's columns, or
// Keyward's own). It only reads and parses: each record goes to a callback as an
// escrow.ImportRecord, which the store validates, seals and stores. It never prints material.
package importer

import (
	"strings"

	"github.com/keyward/keyward/internal/escrow"
)

// Each is what a source calls for every record it reads; an error stops the source.
type Each func(escrow.ImportRecord) error

// VolumeType maps the volume types the sources write to Keyward's: its own names, Graph's
// (operatingSystemVolume, fixedDataVolume, removableDataVolume) and their numbers (1, 2, 3).
// "" stays "" (the store's default); anything else is returned as given for the store to refuse.
func VolumeType(s string) escrow.VolumeType {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "operatingsystem", "operatingsystemvolume", "os", "1":
		return escrow.VolumeOperatingSystem
	case "fixeddata", "fixeddatavolume", "fixed", "2":
		return escrow.VolumeFixedData
	case "removable", "removabledatavolume", "removabledata", "3":
		return escrow.VolumeRemovable
	}
	return escrow.VolumeType(strings.TrimSpace(s))
}
