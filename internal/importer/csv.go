package importer

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/keyward/keyward/internal/escrow"
)

// The CSV columns, by their names with case, spaces, hyphens and underscores ignored. The
// CrowdStrike export writes Hostname, KeyID and RecoveryKey; Keyward's own file is
// hostname, keyId, recoveryPassword, ownerUpn, volumeType (the last two optional), and the
// other names are what PowerShell exports of AD and Graph call the same things.
var csvColumns = map[string][]string{
	"hostname":   {"hostname", "computername", "computer", "devicename", "device", "name"},
	"keyId":      {"keyid", "recoverykeyid", "keyprotectorid", "recoveryguid", "msfverecoveryguid", "id"},
	"password":   {"recoverypassword", "recoverykey", "password", "key", "msfverecoverypassword"},
	"owner":      {"ownerupn", "owner", "upn", "userprincipalname"},
	"volumeType": {"volumetype", "drivetype"},
	"createdAt":  {"createdat", "createddatetime", "whencreated", "escrowedat"},
}

// ReadCSV reads a CSV file of recovery passwords, with a header row naming its columns (see
// csvColumns), and calls each for every row with Position "line N". The file may be UTF-8,
// with or without a byte-order mark, or UTF-16 as Windows PowerShell writes it, and may start
// with PowerShell's "#TYPE" line. A row with fields missing or wrong is still passed on, for
// the store to report by line; only a file that cannot be read as CSV, or whose header lacks
// the hostname, key ID or password column, is an error, and errors never quote a field.
func ReadCSV(r io.Reader, each Each) error {
	br := bufio.NewReader(r)
	src, err := decodeText(br)
	if err != nil {
		return err
	}
	cr := csv.NewReader(src)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	var col map[string]int
	for {
		row, err := cr.Read()
		if errors.Is(err, io.EOF) {
			if col == nil {
				return errors.New("csv: no header row")
			}
			return nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return fmt.Errorf("csv: line %d: %s", pe.Line, pe.Err.Error())
			}
			return fmt.Errorf("csv: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if col == nil {
			if len(row) > 0 && strings.HasPrefix(row[0], "#TYPE") {
				continue
			}
			if col, err = csvHeader(row); err != nil {
				return err
			}
			continue
		}
		if len(row) == 1 && strings.TrimSpace(row[0]) == "" {
			continue
		}
		field := func(name string) string {
			if i, ok := col[name]; ok && i < len(row) {
				return strings.TrimSpace(row[i])
			}
			return ""
		}
		rec := escrow.ImportRecord{
			Position:   fmt.Sprintf("line %d", line),
			Hostname:   field("hostname"),
			KeyID:      field("keyId"),
			Password:   field("password"),
			OwnerUPN:   field("owner"),
			VolumeType: VolumeType(field("volumeType")),
		}
		if s := field("createdAt"); s != "" {
			rec.CreatedAt = parseTime(s)
		}
		if err := each(rec); err != nil {
			return err
		}
	}
}

func csvHeader(row []string) (map[string]int, error) {
	col := map[string]int{}
	for i, name := range row {
		n := strings.NewReplacer(" ", "", "-", "", "_", "").Replace(strings.ToLower(strings.TrimSpace(name)))
		for field, aliases := range csvColumns {
			for _, a := range aliases {
				if _, taken := col[field]; n == a && !taken {
					col[field] = i
				}
			}
		}
	}
	var missing []string
	for _, f := range []string{"hostname", "keyId", "password"} {
		if _, ok := col[f]; !ok {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("csv: the header row has no %s column (want hostname, keyId, recoveryPassword; or Hostname, KeyID, RecoveryKey)", strings.Join(missing, ", "))
	}
	return col, nil
}

// parseTime reads the times the sources write: RFC 3339, and AD's generalized time. A time it
// cannot read is left out (the import time stands in): it is not worth refusing the key.
func parseTime(s string) time.Time {
	for _, layout := range []string{time.RFC3339Nano, "20060102150405.0Z0700", "20060102150405Z0700", "2006-01-02 15:04:05", "1/2/2006 3:04:05 PM"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}

// decodeText returns the text of r as UTF-8: a UTF-8 byte-order mark is dropped, and UTF-16
// with a byte-order mark (Windows PowerShell's "Unicode") is converted.
func decodeText(br *bufio.Reader) (io.Reader, error) {
	bom, _ := br.Peek(3)
	switch {
	case bytes.HasPrefix(bom, []byte{0xEF, 0xBB, 0xBF}):
		_, err := br.Discard(3)
		return br, err
	case bytes.HasPrefix(bom, []byte{0xFF, 0xFE}), bytes.HasPrefix(bom, []byte{0xFE, 0xFF}):
		b, err := io.ReadAll(io.LimitReader(br, 1<<30))
		if err != nil {
			return nil, err
		}
		little := b[0] == 0xFF
		b = b[2:]
		if len(b)%2 != 0 {
			return nil, errors.New("csv: UTF-16 file with an odd number of bytes")
		}
		u := make([]uint16, len(b)/2)
		for i := range u {
			if little {
				u[i] = uint16(b[2*i]) | uint16(b[2*i+1])<<8
			} else {
				u[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
			}
		}
		return strings.NewReader(string(utf16.Decode(u))), nil
	}
	return br, nil
}
