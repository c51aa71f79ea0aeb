package memstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/bits"

	"github.com/golang/snappy"

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
	// recordVersion3 adds a compression byte after the type (every record
	// type) and the compact samples layout (type 2). See WAL-FORMAT.md.
	recordVersion3 byte = 3
	// recordVersion is the version this build writes; it reads 1, 2 and 3.
	recordVersion = recordVersion3

	recSeries  byte = 1
	recSamples byte = 2
	recChunk   byte = 3 // one chunk; written by version 1 only
	recChunks  byte = 4 // many chunks of many series; version 2
	// recExemplars (7) holds exemplars, self-contained (tenant and series labels in each entry):
	// version 3 records of a format 4 file (exemplars.go). Types 5 and 6 are native histograms'.
	recExemplars byte = 7

	recordHeaderSize  = 2
	recordTrailerSize = 4

	// Compression of a version 3 record's body (the byte after the type).
	compNone   byte = 0
	compSnappy byte = 1 // snappy block format (github.com/golang/snappy Encode/Decode)

	// maxSnappyRatio bounds the decoded length a snappy block may claim
	// relative to its own length: the densest snappy element is a 3-byte copy
	// of 64 bytes (ratio 21.3), so a block claiming more is corrupt and is
	// refused before its output buffer is allocated.
	maxSnappyRatio = 22
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
	case recExemplars:
		return "exemplars"
	case recHistograms:
		return "histograms"
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
	// Exemplars is the payload of an exemplars record (type 7).
	Exemplars []walExemplars
	// Histograms is the payload of a histograms record (type 5).
	Histograms []walHistograms

	// Decoder scratch, reused across decodes into the same record.
	sampleBuf []Sample
	offsets   []int
	body      []byte // decompressed body of a version 3 record

	// seq is the record's sequence number, set by wal.rewrite for its filter.
	seq uint64
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

// compressType is the compression a version 3 record of type typ gets when
// it pays: series records (repetitive label strings) and samples records
// are snappy-compressed; chunk data is XOR-compressed already and stays raw
// (snappy gained nothing on it and would cost hand-over CPU).
func compressType(typ byte) bool {
	return typ == recSeries || typ == recSamples || typ == recHistograms || typ == recExemplars
}

// appendRecord appends one whole record — header, body, checksum — stored
// under key seq to dst. body is the record's payload in the layout of
// version (see WAL-FORMAT.md); a version 3 record gets the compression byte
// and, when compressType(typ) and snappy makes it smaller, a snappy block of
// body. zbuf is compression scratch, grown as needed and reused.
func appendRecord(dst []byte, seq uint64, version, typ byte, body []byte, zbuf *[]byte) []byte {
	start := len(dst)
	dst = append(dst, version, typ)
	if version >= recordVersion3 {
		comp, data := compNone, body
		if compressType(typ) && len(body) > 0 {
			if n := snappy.MaxEncodedLen(len(body)); cap(*zbuf) < n {
				*zbuf = make([]byte, n)
			}
			if enc := snappy.Encode((*zbuf)[:cap(*zbuf)], body); len(enc) < len(body) {
				comp, data = compSnappy, enc
			}
		}
		dst = append(dst, comp)
		dst = append(dst, data...)
	} else {
		dst = append(dst, body...)
	}
	return finishRecord(dst, start, seq)
}

// appendSeriesBody appends the payload of a series record holding ss (the
// same layout in every version).
func appendSeriesBody(b []byte, ss []walSeries) []byte {
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
	return b
}

// appendSeriesRecord appends one series record holding ss to b, in the
// version this build writes.
func appendSeriesRecord(b []byte, seq uint64, ss []walSeries) []byte {
	var zbuf []byte
	return appendRecord(b, seq, recordVersion, recSeries, appendSeriesBody(nil, ss), &zbuf)
}

// appendSamplesRecord appends one samples record holding ss to b, in the
// version this build writes.
func appendSamplesRecord(b []byte, seq uint64, ss []walSamples) []byte {
	return appendSamplesRecordVersion(b, seq, recordVersion, ss)
}

// appendSamplesRecordVersion appends one samples record holding ss in
// version (2 or 3; version 1 has the layout of 2).
func appendSamplesRecordVersion(b []byte, seq uint64, version byte, ss []walSamples) []byte {
	body := binary.AppendUvarint(nil, uint64(len(ss)))
	var enc samplesEncoder
	for _, s := range ss {
		if version >= recordVersion3 {
			body = enc.appendEntry(body, s.Ref, s.Samples)
		} else {
			body = appendSamplesEntry(body, s.Ref, s.Samples)
		}
	}
	var zbuf []byte
	return appendRecord(b, seq, version, recSamples, body, &zbuf)
}

// appendSamplesEntry appends one entry of a version 1/2 samples record:
// ref, count, then raw 8-byte timestamps and values (16 bytes a sample).
func appendSamplesEntry(b []byte, ref uint64, samples []Sample) []byte {
	b = binary.BigEndian.AppendUint64(b, ref)
	b = binary.AppendUvarint(b, uint64(len(samples)))
	for _, smp := range samples {
		b = binary.BigEndian.AppendUint64(b, uint64(smp.T))
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(smp.V))
	}
	return b
}

// maxExactInt is the largest magnitude up to which every integer is exactly
// a float64 (2^53): integer-valued samples within it are written as varints.
const maxExactInt = 1 << 53

// exactInt returns v as an integer when v is one within ±2^53 and converting
// back gives the very same bits (so -0 and NaNs are not integers).
func exactInt(v float64) (int64, bool) {
	if !(v >= -maxExactInt && v <= maxExactInt) {
		return 0, false // NaN fails both comparisons
	}
	i := int64(v)
	return i, math.Float64bits(float64(i)) == math.Float64bits(v)
}

// zigzag maps signed deltas to unsigned varints (small magnitudes → few bytes).
func zigzag(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }

func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// samplesEncoder writes the entries of a version 3 samples record. Each
// entry's ref and first timestamp are deltas from the previous entry's (a
// scrape's series have near refs and share timestamps), so the encoder
// carries them from entry to entry; a record starts from zero.
type samplesEncoder struct {
	prevRef uint64
	prevT   int64
}

// appendEntry appends the version 3 entry of samples of series ref:
//
//	dref <varint> │ count<<1 | ints <uvarint> │ [if count > 0:] t0 − prevT <varint>
//	│ dod <varint> × (count−1) │ values
//
// with values, if ints (every value an exact integer within ±2^53): the
// first as a varint, then deltas as varints; else the first as 8 raw
// bytes, then each XOR its predecessor as a control byte (leading zero
// bytes << 4 | trailing zero bytes) and the bytes between. Deltas use
// wrapping int64 arithmetic, so every timestamp round-trips.
func (e *samplesEncoder) appendEntry(b []byte, ref uint64, samples []Sample) []byte {
	b = binary.AppendUvarint(b, zigzag(int64(ref-e.prevRef)))
	e.prevRef = ref
	ints := uint64(1)
	for _, smp := range samples {
		if _, ok := exactInt(smp.V); !ok {
			ints = 0
			break
		}
	}
	b = binary.AppendUvarint(b, uint64(len(samples))<<1|ints)
	if len(samples) == 0 {
		return b
	}
	t0 := samples[0].T
	b = binary.AppendUvarint(b, zigzag(t0-e.prevT))
	e.prevT = t0
	prevT, prevD := t0, int64(0)
	for _, smp := range samples[1:] {
		d := smp.T - prevT
		b = binary.AppendUvarint(b, zigzag(d-prevD))
		prevT, prevD = smp.T, d
	}
	if ints == 1 {
		prev := int64(0)
		for _, smp := range samples {
			i, _ := exactInt(smp.V)
			b = binary.AppendUvarint(b, zigzag(i-prev))
			prev = i
		}
		return b
	}
	prev := math.Float64bits(samples[0].V)
	b = binary.BigEndian.AppendUint64(b, prev)
	for _, smp := range samples[1:] {
		vb := math.Float64bits(smp.V)
		b = appendXOR(b, vb^prev)
		prev = vb
	}
	return b
}

// appendXOR appends x as a control byte lead<<4|trail (its leading and
// trailing zero bytes; x == 0 is 0x80) and the 8−lead−trail bytes between.
func appendXOR(b []byte, x uint64) []byte {
	if x == 0 {
		return append(b, 0x80)
	}
	lead, trail := bits.LeadingZeros64(x)/8, bits.TrailingZeros64(x)/8
	b = append(b, byte(lead<<4|trail))
	x >>= 8 * trail
	for i := 8 - lead - trail - 1; i >= 0; i-- {
		b = append(b, byte(x>>(8*i)))
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
	var zbuf []byte
	return appendRecord(b, seq, recordVersion, recChunk, appendChunkEntry(nil, c.Ref, &c.Chunk), &zbuf)
}

// appendChunksRecord appends one chunks record (type 4) holding cs to b. A
// group ends at an entry with Last set or where the ref changes.
func appendChunksRecord(b []byte, seq uint64, cs []walChunk) []byte {
	body := []byte{0, 0, 0, 0, 0}
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
		body = appendChunksGroup(body, cs[i].Ref, cs[j].LastV, chunks)
		groups++
		i = j + 1
	}
	putUvarint5(body[:5], uint64(groups))
	var zbuf []byte
	return appendRecord(b, seq, recordVersion, recChunks, body, &zbuf)
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
	case recExemplars:
		return appendExemplarsRecord(b, seq, r.Exemplars)
	case recHistograms:
		return appendHistogramsRecord(b, seq, r.Histograms)
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
	if body[0] < recordVersion1 || body[0] > recordVersion3 {
		return fmt.Errorf("%w: version %d (this build reads versions %d to %d)", ErrUnknownRecordVersion, body[0], recordVersion1, recordVersion3)
	}
	r.Version, r.Type = body[0], body[1]
	if r.Type == recChunks && r.Version == recordVersion1 {
		return fmt.Errorf("%w: record type %d does not exist in version %d", ErrCorruptRecord, r.Type, r.Version)
	}
	if (r.Type == recHistograms || r.Type == recExemplars) && r.Version < recordVersion3 {
		return fmt.Errorf("%w: record type %d does not exist in version %d", ErrCorruptRecord, r.Type, r.Version)
	}
	if (r.Type < recSeries || r.Type > recChunks) && r.Type != recHistograms && r.Type != recExemplars {
		return fmt.Errorf("%w: unknown record type %d", ErrCorruptRecord, r.Type)
	}
	payload := body[recordHeaderSize:]
	if r.Version >= recordVersion3 {
		var err error
		if payload, err = r.decompress(payload); err != nil {
			return err
		}
	}
	d := decbuf{b: payload}
	switch r.Type {
	case recSeries:
		n := d.count("series count", 10)
		r.Series = r.Series[:0]
		sb := labels.NewScratchBuilder(0)
		var tenant string
		for i := range n {
			ref := d.be64("series ref")
			// Series of one record share one tenant string (they nearly always have one tenant).
			if t := d.bytes("tenant"); i == 0 || string(t) != tenant {
				tenant = string(t)
			}
			nl := d.count("label count", 2)
			sb.Reset()
			for range nl {
				name := d.bytes("label name")
				value := d.bytes("label value")
				if d.err != nil {
					break
				}
				// Views of the payload where Labels copies them (labelString).
				sb.Add(labelString(name), labelString(value))
			}
			if d.err != nil {
				return d.err
			}
			sb.Sort()
			r.Series = append(r.Series, walSeries{Ref: ref, Tenant: tenant, Labels: sb.Labels()})
		}
	case recSamples:
		var err error
		if r.Version >= recordVersion3 {
			err = r.decodeSamplesV3(&d)
		} else {
			err = r.decodeSamplesV2(&d)
		}
		if err != nil {
			return err
		}
	case recHistograms:
		if err := r.decodeHistograms(&d); err != nil {
			return err
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
	case recExemplars:
		if err := r.decodeExemplars(&d); err != nil {
			return err
		}
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
	}
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes after the %s payload", ErrCorruptRecord, len(d.b), recordTypeName(r.Type))
	}
	return nil
}

// decompress returns the body of a version 3 record's payload p (compression
// byte, then data): the data itself, or its snappy decoding in r.body. The
// decoded length a snappy block claims is bounded by maxSnappyRatio times
// its own length before anything is allocated.
func (r *record) decompress(p []byte) ([]byte, error) {
	if len(p) < 1 {
		return nil, fmt.Errorf("%w: version %d record without its compression byte", ErrCorruptRecord, r.Version)
	}
	switch p[0] {
	case compNone:
		return p[1:], nil
	case compSnappy:
		data := p[1:]
		n, err := snappy.DecodedLen(data)
		if err != nil {
			return nil, fmt.Errorf("%w: snappy block header: %v", ErrCorruptRecord, err)
		}
		if n > maxSnappyRatio*len(data) {
			return nil, fmt.Errorf("%w: snappy block of %d bytes claims %d decoded bytes", ErrCorruptRecord, len(data), n)
		}
		if cap(r.body) < n {
			r.body = make([]byte, n)
		}
		out, err := snappy.Decode(r.body[:cap(r.body)], data)
		if err != nil {
			return nil, fmt.Errorf("%w: snappy block: %v", ErrCorruptRecord, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: unknown compression %d", ErrCorruptRecord, p[0])
}

// decodeSamplesV2 decodes the samples payload of versions 1 and 2.
func (r *record) decodeSamplesV2(d *decbuf) error {
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
	r.pointSamples()
	return nil
}

// pointSamples points each entry of r.Samples into r.sampleBuf, after the
// last append to it (see decodeSamplesV2).
func (r *record) pointSamples() {
	start := 0
	for i, end := range r.offsets {
		r.Samples[i].Samples = r.sampleBuf[start:end:end]
		start = end
	}
}

// decodeSamplesV3 decodes a version 3 samples payload (samplesEncoder). Every
// count is bounded by the bytes left before anything is allocated for it: an
// entry takes at least 2 bytes, a sample at least 2 (a timestamp and a value
// byte).
func (r *record) decodeSamplesV3(d *decbuf) error {
	n := d.count("samples entry count", 2)
	r.Samples = r.Samples[:0]
	r.sampleBuf, r.offsets = r.sampleBuf[:0], r.offsets[:0]
	var prevRef uint64
	var prevT0 int64
	for range n {
		ref := prevRef + uint64(unzigzag(d.uvarint("samples ref delta")))
		prevRef = ref
		hdr := d.uvarint("sample count")
		if d.err != nil {
			return d.err
		}
		ns, ints := hdr>>1, hdr&1 == 1
		if ns > uint64(len(d.b)/2) {
			return fmt.Errorf("%w: sample count %d of ref %d exceeds the %d bytes left", ErrCorruptRecord, ns, ref, len(d.b))
		}
		base := len(r.sampleBuf)
		if ns > 0 {
			t := prevT0 + unzigzag(d.uvarint("first timestamp delta"))
			prevT0 = t
			r.sampleBuf = append(r.sampleBuf, Sample{T: t})
			var delta int64
			for range ns - 1 {
				delta += unzigzag(d.uvarint("timestamp delta of delta"))
				t += delta
				r.sampleBuf = append(r.sampleBuf, Sample{T: t})
			}
			smps := r.sampleBuf[base:]
			if ints {
				var v int64
				for i := range smps {
					dv := unzigzag(d.uvarint("integer value"))
					// Both bounded by 2^53 (dv by 2^54): the sum cannot overflow.
					if dv < -2*maxExactInt || dv > 2*maxExactInt || v+dv < -maxExactInt || v+dv > maxExactInt {
						d.fail("integer value (beyond ±2^53)")
						break
					}
					v += dv
					smps[i].V = float64(v)
				}
			} else {
				vb := d.be64("first value")
				smps[0].V = math.Float64frombits(vb)
				for i := 1; i < len(smps); i++ {
					vb ^= d.xor()
					smps[i].V = math.Float64frombits(vb)
				}
			}
		}
		if d.err != nil {
			return d.err
		}
		r.Samples = append(r.Samples, walSamples{Ref: ref})
		r.offsets = append(r.offsets, len(r.sampleBuf))
	}
	r.pointSamples()
	return nil
}

// xor reads what appendXOR wrote.
func (d *decbuf) xor() uint64 {
	ctl := d.u8("value control byte")
	if d.err != nil {
		return 0
	}
	if ctl == 0x80 {
		return 0
	}
	lead, trail := int(ctl>>4), int(ctl&0x0f)
	n := 8 - lead - trail
	if n <= 0 || len(d.b) < n {
		d.fail("XOR value")
		return 0
	}
	var x uint64
	for _, c := range d.b[:n] {
		x = x<<8 | uint64(c)
	}
	d.b = d.b[n:]
	return x << (8 * trail)
}
