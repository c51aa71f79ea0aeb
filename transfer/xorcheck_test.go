package transfer

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/raftingest/raftingest/memstore"
)

// agree checks walkXOR and decodeChunkFast against decodeChunk (chunkenc's iterator) on c:
// whenever walkXOR vouches for a chunk, decodeChunk accepts it with the same last value bit for
// bit; decodeChunkFast answers exactly what decodeChunk answers. It reports whether walkXOR
// vouched (so callers can require the fast path on well-formed chunks).
func agree(t *testing.T, c memstore.Chunk) (fast bool) {
	t.Helper()
	refV, _, refErr := decodeChunk(c, nil)
	v, ok := walkXOR(c.Data, c.MinTime, c.MaxTime)
	if ok && c.Encoding == chunkenc.EncXOR {
		if refErr != nil {
			t.Fatalf("walkXOR accepts a chunk chunkenc refuses (%v): [%d, %d] % x", refErr, c.MinTime, c.MaxTime, c.Data)
		}
		if math.Float64bits(v) != math.Float64bits(refV) {
			t.Fatalf("walkXOR's last value %v (%016x), chunkenc's %v (%016x): [%d, %d] % x",
				v, math.Float64bits(v), refV, math.Float64bits(refV), c.MinTime, c.MaxTime, c.Data)
		}
	}
	fv, _, fErr := decodeChunkFast(c, nil)
	if (fErr == nil) != (refErr == nil) || (fErr != nil && fErr.Error() != refErr.Error()) {
		t.Fatalf("decodeChunkFast says %v, decodeChunk %v: [%d, %d] % x", fErr, refErr, c.MinTime, c.MaxTime, c.Data)
	}
	if fErr == nil && math.Float64bits(fv) != math.Float64bits(refV) {
		t.Fatalf("decodeChunkFast's last value %v, decodeChunk's %v", fv, refV)
	}
	return ok && c.Encoding == chunkenc.EncXOR
}

// validChunkShapes returns well-formed chunks covering every branch of the encoding: 1, 2, 3 and
// up to 600 samples; every delta-of-delta bucket (0, 14, 17, 20 and 64 bits, both signs and
// the bucket edges); values constant, integer counters, random floats, NaN, ±Inf, the stale
// marker, negative zero, and windows of every width (1 to 64 significant bits).
func validChunkShapes(rng *rand.Rand) []memstore.Chunk {
	var out []memstore.Chunk
	mk := func(ts []int64, vs []float64) {
		c := chunkenc.NewXORChunk()
		app, _ := c.Appender()
		for i := range ts {
			app.Append(ts[i], vs[i])
		}
		out = append(out, memstore.Chunk{MinTime: ts[0], MaxTime: ts[len(ts)-1], Encoding: chunkenc.EncXOR, Data: bytes.Clone(c.Bytes())})
	}
	stale := math.Float64frombits(0x7ff0000000000002)
	specials := []float64{0, math.Copysign(0, -1), 1, -1, math.NaN(), math.Inf(1), math.Inf(-1), stale,
		math.MaxFloat64, math.SmallestNonzeroFloat64, 1e-300, 123456789.125}
	// Edges of the delta-of-delta buckets (chunkenc's bitRange: -(2^(n-1)-1) .. 2^(n-1)).
	dods := []int64{0, 1, -1, 8191, 8192, -8191, -8192, 8193, 65535, 65536, -65535, -65536, 65537,
		524287, 524288, -524287, -524288, 524289, 1 << 40, -(1 << 30)}
	for _, n := range []int{1, 2, 3, 4, 17, 120, 121, 600} {
		for shape := range 8 {
			ts, vs := make([]int64, n), make([]float64, n)
			t0 := rng.Int64N(1<<42) - 1<<41
			if shape == 7 {
				t0 = math.MinInt64 / 2
			}
			delta := int64(15000)
			v := rng.Float64() * 1000
			for i := range n {
				switch {
				case i == 0:
					ts[i] = t0
				case i == 1:
					ts[i] = ts[0] + 1 + rng.Int64N(1<<(rng.IntN(40)+1))
					delta = ts[1] - ts[0]
				default:
					dod := dods[rng.IntN(len(dods))]
					if shape%2 == 0 {
						dod = rng.Int64N(11) - 5 // scrape jitter
					}
					if delta+dod < 1 {
						dod = 1 - delta
					}
					delta += dod
					ts[i] = ts[i-1] + delta
				}
				switch shape {
				case 0: // constant
				case 1: // counter
					v += float64(rng.IntN(100))
				case 2: // random floats
					v = rng.NormFloat64() * math.Pow(10, float64(rng.IntN(40)-20))
				case 3: // specials
					v = specials[rng.IntN(len(specials))]
				case 4: // random bit patterns: every window width
					v = math.Float64frombits(rng.Uint64())
				case 5: // flipping one random bit: narrow windows at every offset
					v = math.Float64frombits(math.Float64bits(v) ^ 1<<rng.IntN(64))
				default:
					v = float64(rng.IntN(3))
				}
				vs[i] = v
			}
			mk(ts, vs)
		}
	}
	return out
}

// TestWalkXOR_AgreesWithChunkenc is the differential test of the fast validator: well-formed
// chunks (which must take the fast path), then for each of them every truncation, every single
// bit flip, extra trailing bytes, other sample counts and other [MinTime, MaxTime] — each
// answered exactly as chunkenc's iterator answers it.
func TestWalkXOR_AgreesWithChunkenc(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	valid := validChunkShapes(rng)
	for _, c := range valid {
		if !agree(t, c) {
			t.Fatalf("walkXOR gives up on a well-formed chunk of %d samples: % x", binary.BigEndian.Uint16(c.Data), c.Data)
		}
	}
	mutants := 0
	try := func(c memstore.Chunk) { agree(t, c); mutants++ }
	for ci, c := range valid {
		if len(c.Data) > 300 && ci%4 != 0 {
			continue // long chunks: a quarter of them is plenty for the exhaustive mutations
		}
		d := c.Data
		for n := range len(d) {
			try(memstore.Chunk{MinTime: c.MinTime, MaxTime: c.MaxTime, Encoding: c.Encoding, Data: d[:n]})
		}
		for i := range len(d) * 8 {
			m := bytes.Clone(d)
			m[i/8] ^= 1 << (i % 8)
			try(memstore.Chunk{MinTime: c.MinTime, MaxTime: c.MaxTime, Encoding: c.Encoding, Data: m})
		}
		for _, extra := range [][]byte{{0}, {0xff}, {0, 0, 0, 0, 0, 0, 0, 0, 0}, bytes.Repeat([]byte{0xa5}, 17)} {
			try(memstore.Chunk{MinTime: c.MinTime, MaxTime: c.MaxTime, Encoding: c.Encoding, Data: append(bytes.Clone(d), extra...)})
		}
		n := binary.BigEndian.Uint16(d)
		for _, cnt := range []uint16{0, 1, n - 1, n + 1, n + 2, 0xffff} {
			m := bytes.Clone(d)
			binary.BigEndian.PutUint16(m, cnt)
			try(memstore.Chunk{MinTime: c.MinTime, MaxTime: c.MaxTime, Encoding: c.Encoding, Data: m})
		}
		for _, b := range [][2]int64{{c.MinTime - 1, c.MaxTime}, {c.MinTime + 1, c.MaxTime}, {c.MinTime, c.MaxTime - 1},
			{c.MinTime, c.MaxTime + 1}, {c.MaxTime, c.MinTime}, {c.MinTime, c.MinTime}} {
			try(memstore.Chunk{MinTime: b[0], MaxTime: b[1], Encoding: c.Encoding, Data: d})
		}
		try(memstore.Chunk{MinTime: c.MinTime, MaxTime: c.MaxTime, Encoding: chunkenc.EncHistogram, Data: d})
		// Random multi-byte damage.
		for range 20 {
			m := bytes.Clone(d)
			for range 1 + rng.IntN(4) {
				m[rng.IntN(len(m))] = byte(rng.Uint32())
			}
			try(memstore.Chunk{MinTime: c.MinTime, MaxTime: c.MaxTime, Encoding: c.Encoding, Data: m})
		}
	}
	// Random bytes behind plausible headers.
	for range 20000 {
		m := make([]byte, 2+rng.IntN(40))
		for i := range m {
			m[i] = byte(rng.Uint32())
		}
		m[0] = 0
		if rng.IntN(2) == 0 {
			m[1] = byte(rng.IntN(4))
		}
		t0, _ := binary.Varint(m[2:])
		try(memstore.Chunk{MinTime: t0, MaxTime: t0 + rng.Int64N(1<<20), Encoding: chunkenc.EncXOR, Data: m})
	}
	t.Logf("%d well-formed chunks, %d mutants, all answered as chunkenc answers them", len(valid), mutants)
}

// FuzzWalkXOR runs decodeChunkFast and walkXOR against decodeChunk on any bytes and bounds.
//
//	go test -run x -fuzz FuzzWalkXOR -fuzztime 60s ./transfer/
func FuzzWalkXOR(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i, c := range validChunkShapes(rng) {
		if i%5 == 0 {
			f.Add(c.Data, c.MinTime, c.MaxTime)
		}
	}
	f.Add([]byte{0, 1, 2}, int64(1), int64(1))
	f.Fuzz(func(t *testing.T, data []byte, minT, maxT int64) {
		agree(t, memstore.Chunk{MinTime: minT, MaxTime: maxT, Encoding: chunkenc.EncXOR, Data: data})
	})
}

// BenchmarkWalkXOR compares the fast validator with chunkenc's iterator per sample, on the shape
// of BenchmarkHandover's series.
//
//	go test -run x -bench 'WalkXOR|CheckChunks' ./transfer/
func BenchmarkWalkXOR(b *testing.B) {
	ts, vs := make([]int64, benchSamplesPerSeries), make([]float64, benchSamplesPerSeries)
	v := 0.0
	for j := range ts {
		v += float64((j * 17) % 100)
		ts[j], vs[j] = int64(j)*15_000+int64(j%5), v
	}
	c := xorChunk(b, ts, vs)
	for _, impl := range []struct {
		name string
		fn   func(memstore.Chunk, chunkenc.Iterator) (float64, chunkenc.Iterator, error)
	}{{"chunkenc", decodeChunk}, {"walkXOR", decodeChunkFast}} {
		b.Run(impl.name, func(b *testing.B) {
			var it chunkenc.Iterator
			for b.Loop() {
				var err error
				if _, it, err = impl.fn(c, it); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchSamplesPerSeries), "ns/sample")
		})
	}
}
