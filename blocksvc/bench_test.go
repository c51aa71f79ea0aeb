package blocksvc

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkStoreBlock stores one real block (5000 series of 480 random samples: ~20 MB, mostly
// chunks) on a member over gRPC on loopback into a filesystem bucket: header checks, pieces, staging,
// the full verification (every chunk decoded), the fsynced upload. Each iteration stores a fresh
// copy (the bucket is emptied between iterations, outside the timer).
func BenchmarkStoreBlock(b *testing.B) {
	n := startNode(b, Config{}, nil)
	dir, meta := testBlock(b, b.TempDir(), "t1", 5000, 480, 1)
	b.SetBytes(meta.BlockSize())
	b.ResetTimer()
	for range b.N {
		if present, err := Store(b.Context(), n.client, "t1", dir); err != nil || present {
			b.Fatalf("Store: %v, %v", present, err)
		}
		b.StopTimer()
		if err := os.RemoveAll(filepath.Join(n.bucketDir, "t1")); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
