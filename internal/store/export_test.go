package store

// SetRewrapHook makes RewrapMasterKey call f between reading each batch and writing it.
func SetRewrapHook(db *DB, f func()) { db.rewrapHook = f }
