package store

import (
	"crypto/rand"
	"fmt"

	"github.com/google/uuid"
)

var cryptoRand = rand.Reader

// newID returns a random UUID, the form of every public ID Keyward assigns.
func (db *DB) newID() (string, error) {
	id, err := uuid.NewRandomFromReader(db.Rand)
	if err != nil {
		return "", fmt.Errorf("generate ID: %w", err)
	}
	return id.String(), nil
}
