package transfer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"unsafe"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/transferpb"
)

// FrameVersion is the version of the frame payload encoding this package writes. It reads it and
// FrameVersion1; any other version is refused with ErrUnknownFrameVersion. Layout (all integers
// varint/uvarint unless noted; "str" is uvarint length + bytes):
//
//	SERIES payload:  uvarint n, then n × series
//	  series:        str tenant · uvarint nlabels · nlabels × (str name · str value)
//	                 · uvarint nchunks · nchunks × chunk
//	                 · u64le last_value   (version 2 only: float64 bits of the last chunk's last
//	                                       sample, so the joiner need not decode the chunk for it)
//	  chunk:         varint min_time_ms · varint max_time_ms · u8 encoding · str data
//	TRAILER payload: uvarint series · uvarint chunks · uvarint bytes   (totals of the whole stream;
//	                 bytes = sum of chunk data lengths)
//
// The frame checksum (Frame.crc32c, Castagnoli) covers: u32be version · str leaver · u64be epoch ·
// u64be seq · u8 kind · payload. It is checked before anything in the payload is believed.
//
// Version 1 is version 2 without last_value; a joiner given version 1 frames decodes each series'
// last chunk to find it.
const (
	FrameVersion  = 2
	FrameVersion1 = 1
)

var (
	// ErrCorruptFrame refuses a frame whose checksum does not match or whose payload does not decode.
	ErrCorruptFrame = errors.New("transfer: corrupt frame")
	// ErrUnknownFrameVersion refuses a frame written by an encoding this build does not know.
	ErrUnknownFrameVersion = errors.New("transfer: unknown frame version")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Series is one series of a hand-over: its tenant, labels and every chunk in time order. It is
// what memstore.Store.ImportBatch takes, so a decoded frame is imported without a copy.
type Series = memstore.ImportSeries

// Totals counts what a stream carried; the trailer frame sends the sender's, the receiver compares
// them with what it received and stored.
type Totals struct {
	Series, Chunks, Bytes uint64
}

func (t *Totals) add(s *Series) {
	t.Series++
	t.Chunks += uint64(len(s.Chunks))
	for _, c := range s.Chunks {
		t.Bytes += uint64(len(c.Data))
	}
}

// frameCRC computes the checksum of a frame's fields (see FrameVersion).
func frameCRC(version uint32, leaver string, epoch, seq uint64, kind transferpb.FrameKind, payload []byte) uint32 {
	var hdr [4 + binary.MaxVarintLen64 + 8 + 8 + 1]byte
	b := binary.BigEndian.AppendUint32(hdr[:0], version)
	b = binary.AppendUvarint(b, uint64(len(leaver)))
	c := crc32.Update(0, castagnoli, b)
	c = crc32.Update(c, castagnoli, []byte(leaver))
	b = binary.BigEndian.AppendUint64(hdr[:0], epoch)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, byte(kind))
	c = crc32.Update(c, castagnoli, b)
	return crc32.Update(c, castagnoli, payload)
}

// sealFrame fills in the version (FrameVersion) and checksum of f.
func sealFrame(f *transferpb.Frame) *transferpb.Frame {
	return sealFrameVersion(f, FrameVersion)
}

// sealFrameVersion is sealFrame for a given version (tests write version 1 frames with it).
func sealFrameVersion(f *transferpb.Frame, version uint32) *transferpb.Frame {
	f.Version = version
	f.Crc32C = frameCRC(f.Version, f.Leaver, f.Epoch, f.Seq, f.Kind, f.Payload)
	return f
}

// checkFrame verifies a frame's version and checksum.
func checkFrame(f *transferpb.Frame) error {
	if v := f.GetVersion(); v != FrameVersion && v != FrameVersion1 {
		return fmt.Errorf("%w: frame %d has version %d, this build reads %d and %d", ErrUnknownFrameVersion, f.GetSeq(), v, FrameVersion1, FrameVersion)
	}
	if got := frameCRC(f.GetVersion(), f.GetLeaver(), f.GetEpoch(), f.GetSeq(), f.GetKind(), f.GetPayload()); got != f.GetCrc32C() {
		return fmt.Errorf("%w: frame %d: checksum %08x, frame says %08x", ErrCorruptFrame, f.GetSeq(), got, f.GetCrc32C())
	}
	return nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendSeries appends one series to a SERIES payload of FrameVersion (without the leading count).
// s.LastV must be set (s.HasLastV).
func appendSeries(b []byte, s *Series) []byte {
	return appendSeriesVersion(b, s, FrameVersion)
}

// appendSeriesVersion appends one series in the layout of version.
func appendSeriesVersion(b []byte, s *Series, version uint32) []byte {
	b = appendStr(b, s.Tenant)
	b = binary.AppendUvarint(b, uint64(s.Labels.Len()))
	s.Labels.Range(func(l labels.Label) {
		b = appendStr(b, l.Name)
		b = appendStr(b, l.Value)
	})
	b = binary.AppendUvarint(b, uint64(len(s.Chunks)))
	for _, c := range s.Chunks {
		b = binary.AppendVarint(b, c.MinTime)
		b = binary.AppendVarint(b, c.MaxTime)
		b = append(b, byte(c.Encoding))
		b = binary.AppendUvarint(b, uint64(len(c.Data)))
		b = append(b, c.Data...)
	}
	if version >= 2 {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(s.LastV))
	}
	return b
}

// encodeSeries returns a SERIES payload of version holding ss.
func encodeSeries(ss []Series, version uint32) []byte {
	b := binary.AppendUvarint(nil, uint64(len(ss)))
	for i := range ss {
		b = appendSeriesVersion(b, &ss[i], version)
	}
	return b
}

func encodeTrailer(t Totals) []byte {
	b := binary.AppendUvarint(nil, t.Series)
	b = binary.AppendUvarint(b, t.Chunks)
	return binary.AppendUvarint(b, t.Bytes)
}

// decoder reads a payload; the first error sticks and names what was being read and where.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at byte %d", ErrCorruptFrame, what, d.off)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) bytes(what string) []byte {
	if d.err != nil {
		return nil
	}
	// Not d.uvarint(what + " length"): the concatenation would allocate on every call.
	n, k := binary.Uvarint(d.b[d.off:])
	if k <= 0 {
		d.fail(what + " length")
		return nil
	}
	d.off += k
	if n > uint64(len(d.b)-d.off) {
		d.fail(what + " longer than the payload")
		return nil
	}
	v := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return v
}

// count reads an element count and refuses one that cannot fit in the rest of the payload (each
// element takes at least minSize bytes), so a corrupt count never makes a huge allocation.
func (d *decoder) count(what string, minSize int) int {
	n := d.uvarint(what)
	if d.err == nil && n > uint64((len(d.b)-d.off)/minSize) {
		d.fail(fmt.Sprintf("%s %d does not fit in the payload", what, n))
		return 0
	}
	return int(n)
}

// decodeSeries decodes a SERIES payload. The returned chunks' Data, and the label names and values
// inside the returned Labels' builder, alias payload: keep payload unchanged while the result is
// used. Labels are built once per series (one allocation); repeated tenants share one string.
func decodeSeries(payload []byte, version uint32) ([]Series, error) {
	d := &decoder{b: payload}
	minSeries := 3
	if version >= 2 {
		minSeries += 8
	}
	n := d.count("series count", minSeries)
	out := make([]Series, 0, n)
	// All chunks of the frame in one slab; each series takes a slice of it.
	var slab []memstore.Chunk
	var lb labels.ScratchBuilder
	var tenant string
	for i := 0; i < n && d.err == nil; i++ {
		var s Series
		if t := d.bytes("tenant"); string(t) != tenant || i == 0 {
			tenant = string(t)
		}
		s.Tenant = tenant
		nl := d.count("label count", 2)
		lb.Reset()
		for j := 0; j < nl && d.err == nil; j++ {
			name := d.bytes("label name")
			value := d.bytes("label value")
			// Aliasing is safe: Labels() copies the names and values into the series' own string.
			lb.Add(yoloString(name), yoloString(value))
		}
		lb.Sort()
		// A new allocation for each series (Reset cleared the builder's output), holding copies
		// of the names and values: the store may keep it as it is.
		s.Labels, s.LabelsOwned = lb.Labels(), scratchLabelsCopy
		nc := d.count("chunk count", 4)
		if d.err == nil && len(slab)+nc > cap(slab) {
			slab = make([]memstore.Chunk, 0, max(nc, 2*(n-i)))
		}
		start := len(slab)
		for j := 0; j < nc && d.err == nil; j++ {
			var c memstore.Chunk
			c.MinTime = d.varint("chunk min time")
			c.MaxTime = d.varint("chunk max time")
			if d.err == nil {
				if d.off >= len(d.b) {
					d.fail("chunk encoding")
					break
				}
				c.Encoding = chunkenc.Encoding(d.b[d.off])
				d.off++
			}
			c.Data = d.bytes("chunk data")
			slab = append(slab, c)
		}
		s.Chunks = slab[start:len(slab):len(slab)]
		if version >= 2 && d.err == nil {
			if len(d.b)-d.off < 8 {
				d.fail("last value")
				break
			}
			s.LastV, s.HasLastV = math.Float64frombits(binary.LittleEndian.Uint64(d.b[d.off:])), true
			d.off += 8
		}
		out = append(out, s)
	}
	if d.err == nil && d.off != len(d.b) {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)-d.off))
	}
	if d.err != nil {
		return nil, d.err
	}
	return out, nil
}

// scratchLabelsCopy reports whether labels.ScratchBuilder.Labels copies the names and values it
// was given into storage of its own, as the default (stringlabels) build of Prometheus's labels
// does; decodeSeries then marks its labels LabelsOwned. Found out once, so that another labels
// build (whose Labels may alias the frame) makes the store copy them instead.
var scratchLabelsCopy = func() bool {
	b := []byte("v")
	var sb labels.ScratchBuilder
	sb.Add("n", yoloString(b))
	ls := sb.Labels()
	b[0] = 'w'
	return ls.Get("n") == "v"
}()

// yoloString returns b as a string without copying. Only for strings that are copied before b
// changes or is freed.
func yoloString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func decodeTrailer(payload []byte) (Totals, error) {
	d := &decoder{b: payload}
	t := Totals{Series: d.uvarint("series total"), Chunks: d.uvarint("chunks total"), Bytes: d.uvarint("bytes total")}
	if d.err == nil && d.off != len(d.b) {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)-d.off))
	}
	if d.err == nil && (t.Chunks < t.Series || t.Bytes > math.MaxInt64) {
		d.fail(fmt.Sprintf("impossible totals %+v", t))
	}
	return t, d.err
}
