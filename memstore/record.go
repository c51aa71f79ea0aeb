package memstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// WAL record layout: see WAL-FORMAT.md. Every record is
//
//	version(1) type(1) payload(...) crc32c(4, big-endian)
//
// where the checksum covers the record's bbolt key (its 8-byte big-endian
// sequence number) followed by version..payload: a record moved to another
// key, or a damaged key, fails its checksum like a damaged value.
const (
	recordVersion1 byte = 1
	recordVersion2 byte = 2
	// recordVersion is the version this build writes; it reads 1 and 2.
	recordVersion = recordVersion2

	recSeries  byte = 1
	recSamples byte = 2
	recChunk   byte = 3 // one chunk; written by version 1 only
	recChunks  byte = 4 // many chunks of many series; version 2

	recordHeaderSize  = 2
	recordTrailerSize = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	// ErrCorruptRecord marks a WAL record that fails its checksum or cannot be decoded.
	ErrCorruptRecord = errors.New("memstore: corrupt WAL record")
	// ErrUnknownRecordVersion marks a WAL record with a format version this build does not know.
	ErrUnknownRecordVersion = errors.New("memstore: unknown WAL record version")
)

func recordTypeName(t byte) string {
	switch t {
	case recSeries:
		return "series"
	case recSamples:
		return "samples"
	case recChunk:
		return "chunk"
	case recChunks:
		return "chunks"
	}
	return fmt.Sprintf("unknown(%d)", t)
}

// walSeries is one new series: its Store-wide ref, tenant and labels.
type walSeries struct {
	Ref    uint64
	Tenant string
	Labels labels.Labels
}

// walSamples is a run of in-order samples of one series.
type walSamples struct {
	Ref     uint64
	Samples []Sample
}

// walChunk is one whole chunk imported into a series. In a chunks record
// (type 4) the last chunk of each series group has Last set and carries
// LastV, the value of its last sample.
type walChunk struct {
	Ref   uint64
	Chunk Chunk
	Last  bool
	LastV float64
}

// walSeriesChunks is the queue entry of the chunks one import adds to a
// series, with the value of the last chunk's last sample.
type walSeriesChunks struct {
	Ref    uint64
	Chunks []Chunk
	LastV  float64
}

// record is a decoded WAL record; exactly one of the payload fields is set,
// according to Type. A chunk record (type 3) decodes into Chunks with one
// element.
type record struct {
	Type    byte
	Version byte
	Series  []walSeries
	Samples []walSamples
	Chunks  []walChunk

	// Decoder scratch, reused across decodes into the same record.
	sampleBuf []Sample
	offsets   []int
}

func appendUvarintString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// recordCRC is the checksum of the record body b stored under key seq.
func recordCRC(seq uint64, b []byte) uint32 {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return crc32.Update(crc32.Checksum(k[:], castagnoli), castagnoli, b)
}

func finishRecord(b []byte, start int, seq uint64) []byte {
	return binary.BigEndian.AppendUint32(b, recordCRC(seq, b[start:]))
}

// appendSeriesRecord appends one series record holding ss to b.
func appendSeriesRecord(b []byte, seq uint64, ss []walSeries) []byte {
	start := len(b)
	b = append(b, recordVersion, recSeries)
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = binary.BigEndian.AppendUint64(b, s.Ref)
		b = appendUvarintString(b, s.Tenant)
		b = binary.AppendUvarint(b, uint64(s.Labels.Len()))
		s.Labels.Range(func(l labels.Label) {
			b = appendUvarintString(b, l.Name)
			b = appendUvarintString(b, l.Value)
		})
	}
	return finishRecord(b, start, seq)
}

// appendSamplesRecord appends one samples record holding ss to b.
func appendSamplesRecord(b []byte, seq uint64, ss []walSamples) []byte {
	start := len(b)
	b = append(b, recordVersion, recSamples)
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendSamplesEntry(b, s.Ref, s.Samples)
	}
	return finishRecord(b, start, seq)
}

func appendSamplesEntry(b []byte, ref uint64, samples []Sample) []byte {
	b = binary.BigEndian.AppendUint64(b, ref)
	b = binary.AppendUvarint(b, uint64(len(samples)))
	for _, smp := range samples {
		b = binary.BigEndian.AppendUint64(b, uint64(smp.T))
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(smp.V))
	}
	return b
}

// appendChunkEntry appends one chunk of series ref, laid out as in a chunk
// record (type 3).
func appendChunkEntry(b []byte, ref uint64, c *Chunk) []byte {
	b = binary.BigEndian.AppendUint64(b, ref)
	return appendChunkBody(b, c)
}

// appendChunkBody appends encoding, mint, maxt and the length-prefixed data.
func appendChunkBody(b []byte, c *Chunk) []byte {
	b = append(b, byte(c.Encoding))
	b = binary.BigEndian.AppendUint64(b, uint64(c.MinTime))
	b = binary.BigEndian.AppendUint64(b, uint64(c.MaxTime))
	b = binary.AppendUvarint(b, uint64(len(c.Data)))
	return append(b, c.Data...)
}

// appendChunksGroup appends one series group of a chunks record (type 4).
func appendChunksGroup(b []byte, ref uint64, lastV float64, cs []Chunk) []byte {
	b = binary.BigEndian.AppendUint64(b, ref)
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(lastV))
	b = binary.AppendUvarint(b, uint64(len(cs)))
	for i := range cs {
		b = appendChunkBody(b, &cs[i])
	}
	return b
}

// appendChunkRecord appends one chunk record (type 3) to b.
func appendChunkRecord(b []byte, seq uint64, c walChunk) []byte {
	start := len(b)
	b = append(b, recordVersion, recChunk)
	b = appendChunkEntry(b, c.Ref, &c.Chunk)
	return finishRecord(b, start, seq)
}

// appendChunksRecord appends one chunks record (type 4) holding cs to b. A
// group ends at an entry with Last set or where the ref changes.
func appendChunksRecord(b []byte, seq uint64, cs []walChunk) []byte {
	start := len(b)
	b = append(b, recordVersion, recChunks)
	countAt := len(b)
	b = append(b, 0, 0, 0, 0, 0)
	groups := 0
	var chunks []Chunk
	for i := 0; i < len(cs); {
		j := i
		for j < len(cs)-1 && !cs[j].Last && cs[j+1].Ref == cs[i].Ref {
			j++
		}
		chunks = chunks[:0]
		for k := i; k <= j; k++ {
			chunks = append(chunks, cs[k].Chunk)
		}
		b = appendChunksGroup(b, cs[i].Ref, cs[j].LastV, chunks)
		groups++
		i = j + 1
	}
	putUvarint5(b[countAt:countAt+5], uint64(groups))
	return finishRecord(b, start, seq)
}

// encodeRecord appends r, to be stored under key seq, to b, in the version
// this build writes.
func encodeRecord(b []byte, seq uint64, r *record) []byte {
	switch r.Type {
	case recSeries:
		return appendSeriesRecord(b, seq, r.Series)
	case recSamples:
		return appendSamplesRecord(b, seq, r.Samples)
	case recChunk:
		return appendChunkRecord(b, seq, r.Chunks[0])
	default:
		return appendChunksRecord(b, seq, r.Chunks)
	}
}

// decbuf reads a record payload; the first failure sticks in err and makes
// every later read return zero, so decoders check err once at the end of a
// loop iteration.
type decbuf struct {
	b   []byte
	err error
}

func (d *decbuf) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: short or malformed %s", ErrCorruptRecord, what)
	}
}

func (d *decbuf) u8(what string) byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail(what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decbuf) be64(what string) uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.fail(what)
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decbuf) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads an element count and refuses counts that cannot fit in the
// remaining bytes, so corrupt input never causes a huge allocation.
func (d *decbuf) count(what string, minElemSize int) int {
	n := d.uvarint(what)
	if d.err == nil && n > uint64(len(d.b)/minElemSize) {
		d.err = fmt.Errorf("%w: %s %d exceeds the %d bytes left", ErrCorruptRecord, what, n, len(d.b))
		return 0
	}
	return int(n)
}

func (d *decbuf) bytes(what string) []byte {
	n := d.uvarint(what)
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail(what)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// chunkBody reads what appendChunkBody wrote; the data is copied (b may be
// bbolt's mmap).
func (d *decbuf) chunkBody(c *Chunk) {
	c.Encoding = chunkenc.Encoding(d.u8("chunk encoding"))
	c.MinTime = int64(d.be64("chunk min time"))
	c.MaxTime = int64(d.be64("chunk max time"))
	data := d.bytes("chunk data")
	if d.err == nil {
		c.Data = append([]byte(nil), data...)
	}
}

// decodeRecord decodes the record b stored under key seq into r, reusing r's slices. It
// never retains b: strings and chunk bytes are copied, because b may point
// into bbolt's mmap, which is valid only during its transaction. Errors wrap
// ErrCorruptRecord or ErrUnknownRecordVersion.
func decodeRecord(seq uint64, b []byte, r *record) error {
	if len(b) < recordHeaderSize+recordTrailerSize {
		return fmt.Errorf("%w: %d bytes is shorter than the %d-byte header and checksum", ErrCorruptRecord, len(b), recordHeaderSize+recordTrailerSize)
	}
	body := b[:len(b)-recordTrailerSize]
	want := binary.BigEndian.Uint32(b[len(b)-recordTrailerSize:])
	if got := recordCRC(seq, body); got != want {
		return fmt.Errorf("%w: checksum mismatch (stored %08x, computed %08x)", ErrCorruptRecord, want, got)
	}
	if body[0] != recordVersion1 && body[0] != recordVersion2 {
		return fmt.Errorf("%w: version %d (this build reads versions %d and %d)", ErrUnknownRecordVersion, body[0], recordVersion1, recordVersion2)
	}
	r.Version, r.Type = body[0], body[1]
	if r.Type == recChunks && r.Version == recordVersion1 {
		return fmt.Errorf("%w: record type %d does not exist in version %d", ErrCorruptRecord, r.Type, r.Version)
	}
	d := decbuf{b: body[recordHeaderSize:]}
	switch r.Type {
	case recSeries:
		n := d.count("series count", 10)
		r.Series = r.Series[:0]
		sb := labels.NewScratchBuilder(0)
		for range n {
			ref := d.be64("series ref")
			tenant := string(d.bytes("tenant"))
			nl := d.count("label count", 2)
			sb.Reset()
			for range nl {
				name := d.bytes("label name")
				value := d.bytes("label value")
				if d.err != nil {
					break
				}
				sb.Add(string(name), string(value))
			}
			if d.err != nil {
				return d.err
			}
			sb.Sort()
			r.Series = append(r.Series, walSeries{Ref: ref, Tenant: tenant, Labels: sb.Labels()})
		}
	case recSamples:
		n := d.count("samples entry count", 9)
		r.Samples = r.Samples[:0]
		// All samples go to one flat buffer reused across decodes; entries are
		// pointed into it only after the last append, so no entry aliases a
		// buffer another entry still uses (callers may reslice and reorder
		// r.Samples, e.g. Truncate's filter).
		r.sampleBuf, r.offsets = r.sampleBuf[:0], r.offsets[:0]
		for range n {
			ref := d.be64("samples ref")
			ns := d.count("sample count", 16)
			if d.err != nil {
				return d.err
			}
			for range ns {
				t := int64(d.be64("sample timestamp"))
				v := math.Float64frombits(d.be64("sample value"))
				r.sampleBuf = append(r.sampleBuf, Sample{T: t, V: v})
			}
			if d.err != nil {
				return d.err
			}
			r.Samples = append(r.Samples, walSamples{Ref: ref})
			r.offsets = append(r.offsets, len(r.sampleBuf))
		}
		start := 0
		for i, end := range r.offsets {
			r.Samples[i].Samples = r.sampleBuf[start:end:end]
			start = end
		}
	case recChunk:
		r.Chunks = r.Chunks[:0]
		var c walChunk
		c.Ref = d.be64("chunk ref")
		d.chunkBody(&c.Chunk)
		if d.err != nil {
			return d.err
		}
		r.Chunks = append(r.Chunks, c)
	case recChunks:
		groups := d.count("chunks group count", 17)
		r.Chunks = r.Chunks[:0]
		for range groups {
			ref := d.be64("chunks ref")
			lastV := math.Float64frombits(d.be64("chunks last value"))
			nc := d.count("chunk count", 18)
			if d.err == nil && nc == 0 {
				return fmt.Errorf("%w: chunks group of ref %d without chunks", ErrCorruptRecord, ref)
			}
			for k := range nc {
				c := walChunk{Ref: ref}
				d.chunkBody(&c.Chunk)
				if d.err != nil {
					return d.err
				}
				if k == nc-1 {
					c.Last, c.LastV = true, lastV
				}
				r.Chunks = append(r.Chunks, c)
			}
			if d.err != nil {
				return d.err
			}
		}
	default:
		return fmt.Errorf("%w: unknown record type %d", ErrCorruptRecord, r.Type)
	}
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes after the %s payload", ErrCorruptRecord, len(d.b), recordTypeName(r.Type))
	}
	return nil
}
