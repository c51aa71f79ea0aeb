//go:build linux

package memstore

import (
	"fmt"
	"os"
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// releaseMappedPages drops this process's page-table entries for every page
// of bbolt's read-only shared mapping of the WAL file, with
// madvise(MADV_DONTNEED), and returns the bytes of the file bbolt uses (its
// high-water mark).
//
// Why it is safe: bbolt maps the file PROT_READ|MAP_SHARED, so the mapping
// holds no private data — a page dropped here is still in the page cache
// (dirty or clean, whatever -wal.sync did) and the next read of it faults it
// back in with the same bytes; writes go through pwrite, never through the
// mapping. The call runs inside a read transaction: bbolt holds its mmap lock
// for reading during every transaction and remaps only under the write lock,
// so the range [Info().Data, +tx.Size()) is bbolt's own mapping while
// madvise runs, never a range that was unmapped (or reused by another
// mapping) underneath. tx.Size() (high-water mark) is at most the mapped
// length and a multiple of bbolt's page size; only whole OS pages are
// advised (the mapping starts page-aligned; the length is rounded down).
//
// Why: pages of the mapping that bbolt reads (branch and leaf pages on every
// commit, every record on replay and truncation) count in the process's RSS
// (RssFile) until the mapping is unmapped, so without this the resident set
// grows with the unflushed data in the WAL, as the kernel has no reason to
// drop them while memory is free. The page cache itself is left to the
// kernel, which reclaims clean file pages under pressure.
func releaseMappedPages(db *bolt.DB) (fileBytes int64, err error) {
	err = db.View(func(tx *bolt.Tx) error {
		fileBytes = tx.Size()
		n := fileBytes - fileBytes%int64(os.Getpagesize())
		if n <= 0 {
			return nil
		}
		addr := db.Info().Data
		// A raw syscall: the range is bbolt's mapping, known only as an address,
		// and converting it back to a Go slice would be an unsafe.Pointer from a
		// uintptr.
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, addr, uintptr(n), syscall.MADV_DONTNEED); e != 0 {
			return fmt.Errorf("madvise(MADV_DONTNEED) of %d mapped bytes: %w", n, e)
		}
		return nil
	})
	return fileBytes, err
}
