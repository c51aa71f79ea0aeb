//go:build !linux

package memstore

import bolt "go.etcd.io/bbolt"

// releaseMappedPages releases nothing outside Linux (see walmap_linux.go); it
// returns the bytes of the file bbolt uses (its high-water mark).
func releaseMappedPages(db *bolt.DB) (fileBytes int64, err error) {
	err = db.View(func(tx *bolt.Tx) error {
		fileBytes = tx.Size()
		return nil
	})
	return fileBytes, err
}
