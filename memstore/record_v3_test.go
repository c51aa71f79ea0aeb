package memstore

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/value"
)

// Tests of the version 3 record layout (WAL-FORMAT.md): the compact samples
// body, the compression byte, and the decoder's refusals of malformed bodies
// under a valid checksum.

// v3Sealed returns a version 3 record of type typ stored under seq whose
// body is stored uncompressed.
func v3Sealed(seq uint64, typ byte, body []byte) []byte {
	return sealRecord(seq, recordVersion3, typ, append([]byte{compNone}, body...))
}

// randomEntries returns entries that exercise every branch of the samples
// encoder: integer and float runs, NaN, stale markers, -0, ±Inf, ±2^53 and
// just beyond, extreme timestamps, refs going down as well as up, and
// entries without samples.
func randomEntries(rng *rand.Rand) []walSamples {
	specials := []float64{math.NaN(), math.Float64frombits(value.StaleNaN), math.Copysign(0, -1), 0, math.Inf(1), math.Inf(-1),
		maxExactInt, -maxExactInt, maxExactInt + 2, -maxExactInt - 2, math.MaxFloat64, math.SmallestNonzeroFloat64, 0.1, 1e300}
	times := []int64{math.MinInt64, math.MaxInt64, 0, -1, 1_700_000_000_000}
	var es []walSamples
	for range 1 + rng.IntN(40) {
		e := walSamples{Ref: rng.Uint64N(1 << uint(1+rng.IntN(63)))}
		n := rng.IntN(6)
		if rng.IntN(10) == 0 {
			n = 100 + rng.IntN(200)
		}
		t := times[rng.IntN(len(times))]
		v := float64(rng.IntN(1_000_000))
		for range n {
			switch rng.IntN(6) {
			case 0:
				v = specials[rng.IntN(len(specials))]
			case 1:
				v = rng.NormFloat64() * 1e6
			case 2:
				v += float64(rng.IntN(1000))
			}
			e.Samples = append(e.Samples, Sample{T: t, V: v})
			switch rng.IntN(4) {
			case 0:
				t = times[rng.IntN(len(times))]
			default:
				t += int64(15_000 + rng.IntN(40) - 20)
			}
		}
		es = append(es, e)
	}
	return es
}

// TestSamplesRecordV3_RoundTrip: random entries encode and decode to the
// same refs and the same sample bits, in both versions the committer can
// write, compressed or not.
func TestSamplesRecordV3_RoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for i := range 2000 {
		es := randomEntries(rng)
		for _, version := range []byte{recordVersion2, recordVersion3} {
			seq := uint64(i + 1)
			rec := appendSamplesRecordVersion(nil, seq, version, es)
			var r record
			if err := decodeRecord(seq, rec, &r); err != nil {
				t.Fatalf("version %d: %v", version, err)
			}
			if r.Version != version || r.Type != recSamples || len(r.Samples) != len(es) {
				t.Fatalf("version %d: decoded version %d type %d, %d entries (want %d)", version, r.Version, r.Type, len(r.Samples), len(es))
			}
			for k := range es {
				if r.Samples[k].Ref != es[k].Ref || !samplesEqual(r.Samples[k].Samples, es[k].Samples) {
					t.Fatalf("version %d entry %d: got ref %d %v, want ref %d %v", version, k, r.Samples[k].Ref, r.Samples[k].Samples, es[k].Ref, es[k].Samples)
				}
			}
		}
	}
}

// TestSamplesRecordV3_CompressesOnlyWhenSmaller: a body snappy cannot shrink
// is stored raw (compression byte 0), a repetitive one as snappy (1).
func TestSamplesRecordV3_CompressesOnlyWhenSmaller(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	one := appendSamplesRecord(nil, 1, []walSamples{{Ref: 1, Samples: []Sample{{1, rng.Float64()}}}})
	if c := one[recordHeaderSize]; c != compNone {
		t.Fatalf("a one-sample record was stored with compression %d", c)
	}
	var es []walSamples
	for i := range 1000 {
		es = append(es, walSamples{Ref: uint64(i + 1), Samples: []Sample{{1_700_000_000_000, 0.5}}})
	}
	many := appendSamplesRecord(nil, 2, es)
	if c := many[recordHeaderSize]; c != compSnappy {
		t.Fatalf("a repetitive record was stored with compression %d", c)
	}
	var r record
	if err := decodeRecord(2, many, &r); err != nil || len(r.Samples) != 1000 {
		t.Fatalf("decode: %v, %d entries", err, len(r.Samples))
	}
}

// TestDecodeRecordV3_RefusesMalformed: bodies that pass the checksum but are
// malformed are refused with ErrCorruptRecord and a message saying what was
// wrong, never a panic or an allocation beyond what the record can hold.
func TestDecodeRecordV3_RefusesMalformed(t *testing.T) {
	huge := binary.AppendUvarint(nil, 1<<30) // a snappy header claiming 1 GiB
	cases := []struct {
		name, want string
		rec        []byte
	}{
		{"no compression byte", "compression byte", sealRecord(1, recordVersion3, recSamples, nil)},
		{"unknown compression", "unknown compression 7", sealRecord(1, recordVersion3, recSamples, []byte{7, 0})},
		{"snappy garbage", "snappy", sealRecord(1, recordVersion3, recSamples, []byte{compSnappy, 5, 0xff, 0xff})},
		{"snappy claims 1 GiB", "claims", sealRecord(1, recordVersion3, recSamples, append([]byte{compSnappy}, huge...))},
		{"entry count beyond bytes", "samples entry count", v3Sealed(1, recSamples, []byte{100, 0, 0})},
		{"sample count beyond bytes", "sample count", v3Sealed(1, recSamples, []byte{1, 0, 40 << 1, 0, 0})},
		{"integer beyond 2^53", "beyond", v3Sealed(1, recSamples, binary.AppendUvarint([]byte{1, 0, 1<<1 | 1, 0}, zigzag(maxExactInt+1)))},
		{"integer delta overflows", "beyond", v3Sealed(1, recSamples, binary.AppendUvarint(binary.AppendUvarint([]byte{1, 0, 2<<1 | 1, 0, 0}, zigzag(maxExactInt)), zigzag(1)))},
		{"XOR control byte beyond 8 bytes", "XOR", v3Sealed(1, recSamples, []byte{1, 0, 2 << 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53, 1, 2, 3})},
		{"XOR value short", "XOR", v3Sealed(1, recSamples, []byte{1, 0, 2 << 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 1, 2})},
		{"truncated first value", "first value", v3Sealed(1, recSamples, []byte{1, 0, 1 << 1, 0, 1, 2, 3})},
		{"trailing bytes", "trailing", v3Sealed(1, recSamples, []byte{1, 0, 0, 9, 9})},
		{"series body truncated", "tenant", v3Sealed(1, recSeries, []byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 5, 'a', 'b'})},
		{"chunks group without chunks", "without chunks", v3Sealed(1, recChunks, append(append([]byte{1}, make([]byte, 16)...), 0))},
	}
	// The count-beyond-bytes cases must fail before allocating for the count.
	cases[4].rec = v3Sealed(1, recSamples, binary.AppendUvarint(nil, 1<<40))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r record
			err := decodeRecord(1, tc.rec, &r)
			if !errors.Is(err, ErrCorruptRecord) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrCorruptRecord mentioning %q", err, tc.want)
			}
			if cap(r.sampleBuf) > 64 || cap(r.body) > 64 {
				t.Fatalf("allocated %d samples, %d body bytes for a %d-byte record", cap(r.sampleBuf), cap(r.body), len(tc.rec))
			}
		})
	}
	// The ratio bound admits every real block: the densest one snappy writes
	// (a long run of one byte) is decompressed, and the decoder goes on to
	// the body (a zero series count, then bytes it does not expect).
	run := make([]byte, 1<<20)
	var r record
	err := decodeRecord(1, sealRecord(1, recordVersion3, recSeries, append([]byte{compSnappy}, snappy.Encode(nil, run)...)), &r)
	if err == nil || !strings.Contains(err.Error(), "trailing bytes") {
		t.Fatalf("a real snappy block of a 1 MiB run: got %v, want the body decoded (and refused for its trailing bytes)", err)
	}
}
