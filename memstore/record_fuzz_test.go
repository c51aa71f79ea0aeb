package memstore

import (
	"encoding/binary"
	"errors"
	"math"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	bolt "go.etcd.io/bbolt"
)

// FuzzDecodeRecord (wal_test.go) feeds whole records, which random bytes almost never get past
// the CRC-32C check; these targets compute the checksum themselves so that the fuzzer reaches the
// payload decoders and replay. Seed corpora: f.Add below and testdata/fuzz/<target>/. Both run as
// ordinary tests in `make test`; `make fuzz` fuzzes them.

// sealRecord returns version, type and payload stored under seq, with their checksum.
func sealRecord(seq uint64, version, typ byte, payload []byte) []byte {
	b := append([]byte{version, typ}, payload...)
	return binary.BigEndian.AppendUint32(b, recordCRC(seq, b))
}

// payloadOf strips a record's header and checksum.
func payloadOf(rec []byte) []byte { return rec[recordHeaderSize : len(rec)-recordTrailerSize] }

// seedRecords are valid records of every type and version, for the seed corpora: what this
// build writes (version 3: series and samples records snappy-compressed when that pays, a
// samples record stored raw, with integer and float entries of several samples), and version 2
// samples records (the layout versions 1 and 2 share).
func seedRecords() [][]byte {
	mixed := []walSamples{
		{Ref: 1, Samples: []Sample{{1, math.NaN()}, {2, math.Float64frombits(value.StaleNaN)}, {math.MaxInt64, math.Copysign(0, -1)}}},
		{Ref: 2},
		{Ref: 7, Samples: []Sample{{1_700_000_000_000, 100}, {1_700_000_015_000, 250}, {1_700_000_030_001, 251}}},
		{Ref: 5, Samples: []Sample{{1_700_000_000_000, 0.25}, {1_700_000_015_000, 0.5}, {math.MinInt64, math.Inf(-1)}}},
	}
	var many []walSamples
	for i := range 300 {
		many = append(many, walSamples{Ref: uint64(1000 + i), Samples: []Sample{{int64(1_700_000_000_000 + i%7), float64(i * 4096)}}})
	}
	return [][]byte{
		appendSeriesRecord(nil, 1, []walSeries{
			{Ref: 1, Tenant: "t", Labels: labels.FromStrings("__name__", "m", "a", "b")},
			{Ref: 2, Tenant: "t-2", Labels: labels.FromStrings("c", "")},
		}),
		appendSamplesRecord(nil, 2, mixed),
		appendChunkRecord(nil, 3, walChunk{Ref: 1, Chunk: Chunk{MinTime: 5, MaxTime: 6, Encoding: 1, Data: xorChunk(Sample{5, 1}, Sample{6, 2})}}),
		appendChunksRecord(nil, 4, []walChunk{
			{Ref: 2, Chunk: Chunk{MinTime: 1, MaxTime: 2, Encoding: 1, Data: xorChunk(Sample{1, 1}, Sample{2, 2})}},
			{Ref: 2, Chunk: Chunk{MinTime: 3, MaxTime: 3, Encoding: 1, Data: xorChunk(Sample{3, math.NaN()})}, Last: true, LastV: math.NaN()},
		}),
		appendSamplesRecordVersion(nil, 5, recordVersion2, mixed),
		appendSamplesRecord(nil, 6, many), // snappy-compressed
		appendExemplarsRecord(nil, 7, []walExemplars{
			{Tenant: "t", Labels: labels.FromStrings("__name__", "m", "a", "b"), Exemplars: []Exemplar{
				{Labels: labels.FromStrings("trace_id", "x"), T: 1_700_000_000_000, Value: 0.25},
				{Labels: labels.EmptyLabels(), T: math.MinInt64, Value: math.NaN()},
			}},
		}),
		appendHistogramsRecord(nil, 8, seedHistograms()),
	}
}

// uncompressedV3 returns the payload of a version 3 record with its body stored raw, so that
// the fuzzer mutates the body itself rather than a snappy block.
func uncompressedV3(rec []byte) []byte {
	var r record
	if err := decodeRecord(0, rec, &r); err != nil {
		return payloadOf(rec)
	}
	p, err := r.decompress(payloadOf(rec))
	if err != nil {
		return payloadOf(rec)
	}
	return append([]byte{compNone}, p...)
}

// FuzzDecodeRecordPayload decodes any payload of any version and type under a valid checksum: a
// decode never panics and fails only with ErrCorruptRecord or ErrUnknownRecordVersion; what
// decodes re-encodes (in the version this build writes) into a record that decodes to the same
// thing and encodes to the same bytes again.
func FuzzDecodeRecordPayload(f *testing.F) {
	for i, rec := range seedRecords() {
		f.Add(uint64(i+1), rec[0], rec[1], payloadOf(rec))
		f.Add(uint64(i+1), recordVersion1, rec[1], payloadOf(rec))
		if rec[0] == recordVersion3 {
			f.Add(uint64(i+1), recordVersion3, rec[1], uncompressedV3(rec))
		}
	}
	f.Fuzz(func(t *testing.T, seq uint64, version, typ byte, payload []byte) {
		var r record
		err := decodeRecord(seq, sealRecord(seq, version, typ, payload), &r)
		if err != nil {
			if !errors.Is(err, ErrCorruptRecord) && !errors.Is(err, ErrUnknownRecordVersion) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if r.Type == recChunk && len(r.Chunks) != 1 {
			t.Fatalf("chunk record decoded into %d chunks", len(r.Chunks))
		}
		enc := encodeRecord(nil, seq, &r)
		var r2 record
		if err := decodeRecord(seq, enc, &r2); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if !recordsEqual(&r, &r2) {
			t.Fatalf("round trip: %+v != %+v", r, r2)
		}
		if enc2 := encodeRecord(nil, seq, &r2); string(enc2) != string(enc) {
			t.Fatal("encoding is not stable")
		}
	})
}

// FuzzWALReplay writes fuzzed records (any payloads, valid checksums) into a WAL file and opens a
// Store on it: Open never panics and never fails on a record (a corrupt one and the tail after it
// are cut), and opening the file again replays the same data (replay after the cut is stable).
func FuzzWALReplay(f *testing.F) {
	var seed []byte
	for _, rec := range seedRecords() {
		seed = appendFuzzRecord(seed, rec[0], rec[1], payloadOf(rec))
	}
	f.Add(seed)
	f.Add(appendFuzzRecord(nil, recordVersion, recSamples, payloadOf(seedRecords()[1]))) // samples of unknown refs
	var raw []byte                                                                       // version 3 bodies stored raw, for the fuzzer to mutate
	for _, rec := range seedRecords() {
		if rec[0] == recordVersion3 {
			raw = appendFuzzRecord(raw, rec[0], rec[1], uncompressedV3(rec))
		}
	}
	f.Add(raw)
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		db, err := bolt.Open(filepath.Join(dir, WALFileName), 0o600, &bolt.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			if err := meta.Put(keyFormat, []byte{walFormatVersion}); err != nil {
				return err
			}
			b, err := tx.CreateBucket(bucketWAL)
			if err != nil {
				return err
			}
			for seq := uint64(1); len(data) >= 3 && seq <= 64; seq++ {
				version, typ, n := data[0], data[1], int(data[2])
				data = data[3:]
				n = min(n, len(data))
				if err := b.Put(binary.BigEndian.AppendUint64(nil, seq), sealRecord(seq, version, typ, data[:n])); err != nil {
					return err
				}
				data = data[n:]
			}
			return nil
		})
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(dir)
		cfg.WALSync = false
		st, err := Open(cfg, nil, testLogger())
		if err != nil {
			t.Fatalf("Open refused a file of checksummed records: %v", err)
		}
		first := dump(t, st)
		firstH := dumpHist(t, st)
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		st, err = Open(cfg, nil, testLogger())
		if err != nil {
			t.Fatalf("second Open: %v", err)
		}
		defer st.Close()
		if rep := st.ReplayReport(); rep.Corruption != nil {
			t.Fatalf("corruption found again after the first replay cut it: %v", rep.Corruption)
		}
		requireSameData(t, first, dump(t, st))
		if got := dumpHist(t, st); !reflect.DeepEqual(firstH, got) {
			t.Fatalf("histograms differ after the second replay:\n%v\n%v", firstH, got)
		}
	})
}

// appendFuzzRecord appends one record in FuzzWALReplay's framing: version, type, payload length
// (one byte), payload.
func appendFuzzRecord(b []byte, version, typ byte, payload []byte) []byte {
	if len(payload) > 255 {
		payload = payload[:255]
	}
	b = append(b, version, typ, byte(len(payload)))
	return append(b, payload...)
}
