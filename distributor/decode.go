package distributor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unsafe"

	"github.com/golang/snappy"

	"github.com/raftingest/raftingest/ingesterpb"
)

// Errors of the decoder. Every decode failure wraps one of them; the handler answers 400 or 413.
var (
	// ErrMalformed is a body that is not a valid snappy block or not a valid WriteRequest.
	ErrMalformed = errors.New("distributor: malformed remote-write body")
	// ErrTooLarge is a body whose compressed or decompressed size exceeds -distributor.max-recv-msg-size,
	// or whose decoding would pass a DecodeLimits bound (too many series, or series, labels and
	// samples so small and many that decoding them would take more than MaxExpansion times the body).
	ErrTooLarge = errors.New("distributor: remote-write body too large")
)

// DecodeLimits bound what decoding one request may allocate. The zero value bounds nothing.
type DecodeLimits struct {
	// MaxSeries is the most series a request may hold (-distributor.max-series-per-request); 0: no
	// limit. The decoder stops at the first series over it, before allocating for that series.
	MaxSeries int
	// MaxExpansion bounds the memory of the decoded series, labels and samples (their structures,
	// not the strings, which alias the body) to MaxExpansion times the decompressed body plus
	// decodeSlackBytes; 0: no bound. An empty TimeSeries is 2 bytes of body but a Series of about
	// 136 bytes, an empty label 2 bytes but a 32-byte Label: without this bound a body of such
	// near-empty messages costs up to 68 times its size. Arenas grow only up to what the bound
	// still allows, so a request that fits is never refused for the arenas' growth policy.
	MaxExpansion int
	// MaxRewrittenBytes bounds, for a remote-write 2.0 request, the size of its series re-encoded
	// as 1.0 for the ingesters (each label's strings in full where 2.0 names them by reference);
	// 0: no bound. The handler gives -distributor.max-recv-msg-size: the same series sent as 1.0
	// would have been refused at that size.
	MaxRewrittenBytes int
}

// DefaultMaxExpansion is the expansion bound the push handler decodes with. Real requests stay far
// below it: Prometheus-like series of 10 labels cost about 1.5 times their encoded size, the
// smallest plausible series ({__name__="a"}, one sample of value 0) about 7 times.
const DefaultMaxExpansion = 10

// decodeSlackBytes is the memory any request may use whatever its size, so that tiny requests are
// never refused by the expansion bound.
const decodeSlackBytes = 64 << 10

// Sizes of the decoded structures, for the expansion bound.
const (
	seriesBytes = int(unsafe.Sizeof(Series{}))
	labelBytes  = int(unsafe.Sizeof(Label{}))
	sampleBytes = int(unsafe.Sizeof(Sample{}))
)

// Label is one label of a decoded series.
//
// LIFETIME: Name and Value are "yolo" strings — they alias the decompressed request body instead of
// holding a copy (as Cortex's LabelAdapter does), which is what makes decoding allocation-free. They are
// valid only until the request's buffers go back to the pool, which happens when the push that decoded
// them returns. Anything that keeps a label beyond that point (a map key, a log line formatted later, a
// metric label, an error kept past the request) MUST copy it first: strings.Clone(l.Value). Reading a
// yolo string after its buffer was reused does not crash: it silently reads another request's bytes.
type Label struct {
	Name, Value string
}

// Sample is one float sample: a value at a Unix timestamp in milliseconds.
type Sample struct {
	Value       float64
	TimestampMs int64
}

// Series is one decoded TimeSeries of a WriteRequest. Its slices point into the WriteRequest's arenas
// and its strings into the body: see Label for the lifetime rule.
type Series struct {
	Labels  []Label
	Samples []Sample
	// Raw is the series' whole `timeseries` field in the body — tag, length and the encoded
	// TimeSeries — which is also a valid `timeseries` field of an ingester PushRequest. When the
	// distributor does not need to change the series, it forwards Raw as is.
	Raw []byte
	// Exemplars counts the series' exemplars (decoded into the request's exemplar arena from
	// exStart: WriteRequest.SeriesExemplars); Histograms its native-histogram samples, decoded into
	// Hists (decode_hist.go).
	Exemplars, Histograms int
	// Hists are the series' native histograms, decoded (owned, not aliasing the body).
	Hists []Histogram
	// canonical is true when Raw holds nothing but labels, samples and histograms, each label exactly one name
	// and one value field and each sample at most one of each field: forwarding Raw then gives the
	// ingester exactly the labels and samples the distributor validated.
	canonical bool

	labelStart, labelEnd, sampleStart, sampleEnd int32 // arena offsets while decoding
	exStart                                      int32 // offset of its exemplars in the exemplar arena

	// Set by the distributor while it routes the series.
	rewrite bool // Labels or Samples changed (or Raw is not canonical): re-encode before sending
	// exemplarsSent is true when the series' exemplars were validated and go to the ingesters with
	// it (the tenant stores exemplars).
	exemplarsSent bool
	state         uint8  // seriesOK, seriesFailed4xx, ...
	hash          uint32 // placement hash (tenant + labels)
	acks          uint8  // replicas that stored it
	fail4xx       uint8  // replicas that refused it with a client error
	fail5xx       uint8  // replicas that failed (call errors, server errors)
	nrep          uint8  // size of its replication set
	repOff        int32  // offset of its replicas in the push's replica arena
	// why4xx and why5xx are the last failure of each class, as 1 + an index into the push's
	// failures (pushState.fails); 0 is none. Failures are rare: keeping them out of line keeps
	// Series small (136 bytes instead of 208), which the expansion bound (DecodeLimits) counts.
	why4xx, why5xx int32
}

// failure is one replica's failure to store a series: a per-series refusal or a failed call.
type failure struct {
	ierr    *ingesterpb.SeriesError
	callErr error
	addr    string
}

// WriteRequest is a decoded Prometheus remote-write request (prompb.WriteRequest), decoded without a
// per-label allocation. A WriteRequest is reused from request to request: Unmarshal resets it, keeping
// its arenas' capacity. It is not safe for concurrent use.
type WriteRequest struct {
	Series []Series
	// Metadata counts the metric metadata entries (1.0: WriteRequest.metadata fields; 2.0: the
	// series' non-empty Metadata); they are decoded into the metadata arena (MetricMetadata).
	Metadata int
	// Exemplars and Histograms are the totals over all series.
	Exemplars, Histograms int

	labels  []Label  // arena of every series' labels
	samples []Sample // arena of every series' samples
	symbols []string // a 2.0 request's symbols table (aliasing the body); empty for 1.0
	// Arenas of exemplars, their labels and the metadata entries (exemplars.go).
	exemplars []Exemplar
	exLabels  []Label
	metadata  []Metadata
	// v2 is true when the request was decoded from remote-write 2.0 (UnmarshalV2Limited).
	v2 bool
	// rewritten is, for a 2.0 request, the size of its series re-encoded as 1.0 (an upper bound of
	// appendSeries' output for all of them); maxRewritten is DecodeLimits.MaxRewrittenBytes.
	rewritten, maxRewritten int

	// Bounds of the decode in progress (UnmarshalLimited): maxSeries (0: none); budget, the most
	// bytes the arenas may use (0: none), computed as expansion times bodyLen plus decodeSlackBytes.
	maxSeries, budget, expansion, bodyLen int
	grown                                 uint16 // grew* bits
	// histBytes is what the decoded native histograms are charged (chargeHistogram): they live in
	// objects of their own, outside the arenas, and count toward the same bound.
	histBytes int
}

// DecodedBytes is the memory the request's decoded series, labels and samples use (their lengths,
// not the arenas' capacity): what DecodeLimits.MaxExpansion bounds.
func (r *WriteRequest) DecodedBytes() int {
	return len(r.Series)*seriesBytes + len(r.labels)*labelBytes + len(r.samples)*sampleBytes + len(r.symbols)*symbolBytes +
		len(r.exemplars)*exemplarBytes + len(r.exLabels)*labelBytes + len(r.metadata)*metadataBytes + r.histBytes
}

// arenaCost is what the expansion bound counts of the arenas: each by its capacity when this
// decode grew it, else by its length. Its own arena's capacity is subtracted by grow.
func (r *WriteRequest) arenaCost() int {
	cost := func(grown bool, n, c, size int) int {
		if grown {
			return c * size
		}
		return n * size
	}
	return cost(r.grown&grewSeries != 0, len(r.Series), cap(r.Series), seriesBytes) +
		cost(r.grown&grewLabels != 0, len(r.labels), cap(r.labels), labelBytes) +
		cost(r.grown&grewSamples != 0, len(r.samples), cap(r.samples), sampleBytes) +
		cost(r.grown&grewSymbols != 0, len(r.symbols), cap(r.symbols), symbolBytes) +
		cost(r.grown&grewExemplars != 0, len(r.exemplars), cap(r.exemplars), exemplarBytes) +
		cost(r.grown&grewExLabels != 0, len(r.exLabels), cap(r.exLabels), labelBytes) +
		cost(r.grown&grewMetadata != 0, len(r.metadata), cap(r.metadata), metadataBytes) +
		r.histBytes
}

// Bits of WriteRequest.grown: the arenas this decode reallocated.
const (
	grewSeries = 1 << iota
	grewLabels
	grewSamples
	grewSymbols
	grewExemplars
	grewExLabels
	grewMetadata
)

// ArenaBytes is the capacity of r's arenas in bytes: what r keeps allocated when it is reused.
func (r *WriteRequest) ArenaBytes() int {
	return cap(r.Series)*seriesBytes + cap(r.labels)*labelBytes + cap(r.samples)*sampleBytes + cap(r.symbols)*symbolBytes +
		cap(r.exemplars)*exemplarBytes + cap(r.exLabels)*labelBytes + cap(r.metadata)*metadataBytes
}

// grow makes room for one more element in an arena of len n and capacity c whose elements take
// size bytes, within the budget: it returns the new capacity (doubling, at least 64, but no more
// than the budget allows) or an error when not even one more element fits. Callers allocate exactly
// that capacity with make (append's growth could round a capped capacity up to double).
func (r *WriteRequest) grow(what string, bit uint16, n, c, size int) (int, error) {
	if r.grown&bit == 0 {
		c = n // an arena not grown yet counts by its length (see arenaCost)
	}
	want := max(2*c, 64)
	if r.budget > 0 {
		// The other arenas count by capacity if this decode grew them, else by length: capacity
		// left over from an earlier, larger request of a pooled WriteRequest costs nothing new.
		used := r.arenaCost() - c*size
		afford := (r.budget - used) / size
		if afford <= n {
			return 0, fmt.Errorf("%w: decoding it would take more than %d bytes, %d times its decompressed size of %d bytes plus %d (over the bound at %s %d, after %d series, %d labels and %d samples): the request is made of empty or near-empty series, labels or samples",
				ErrTooLarge, r.budget, r.expansion, r.bodyLen, decodeSlackBytes, what, n+1, len(r.Series), len(r.labels), len(r.samples))
		}
		want = min(want, afford)
	}
	return want, nil
}

// growLabels makes room for one more label within the bounds (the decoder calls it only when
// the arena is full, so that the hot path stays an inlined append).
func (r *WriteRequest) growLabels() error {
	c, err := r.grow("label", grewLabels, len(r.labels), cap(r.labels), labelBytes)
	if err != nil {
		return err
	}
	r.labels = append(make([]Label, 0, c), r.labels...)
	r.grown |= grewLabels
	return nil
}

// growSamples makes room for one more sample within the bounds (the decoder calls it only when
// the arena is full, so that the hot path stays an inlined append).
func (r *WriteRequest) growSamples() error {
	c, err := r.grow("sample", grewSamples, len(r.samples), cap(r.samples), sampleBytes)
	if err != nil {
		return err
	}
	r.samples = append(make([]Sample, 0, c), r.samples...)
	r.grown |= grewSamples
	return nil
}

// growSeries makes room for one more series within the bounds (the decoder calls it only when
// the arena is full, so that the hot path stays an inlined append).
func (r *WriteRequest) growSeries() error {
	c, err := r.grow("series", grewSeries, len(r.Series), cap(r.Series), seriesBytes)
	if err != nil {
		return err
	}
	r.Series = append(make([]Series, 0, c), r.Series...)
	r.grown |= grewSeries
	return nil
}

// Reset empties r, keeping its capacity. It also drops every reference into the last body, so a
// pooled WriteRequest does not keep a body alive.
func (r *WriteRequest) Reset() {
	clear(r.Series) // drop references to the previous body and arenas
	clear(r.labels)
	clear(r.symbols)
	clear(r.exemplars)
	clear(r.exLabels)
	clear(r.metadata)
	r.Series, r.labels, r.samples, r.symbols = r.Series[:0], r.labels[:0], r.samples[:0], r.symbols[:0]
	r.exemplars, r.exLabels, r.metadata = r.exemplars[:0], r.exLabels[:0], r.metadata[:0]
	r.Metadata, r.Exemplars, r.Histograms, r.v2 = 0, 0, 0, false
	r.rewritten, r.maxRewritten = 0, 0
}

// RewrittenBytes is, for a remote-write 2.0 request, the bytes its series take re-encoded as 1.0
// (what is sent to each replica); 0 for 1.0, whose series are forwarded as they came.
func (r *WriteRequest) RewrittenBytes() int { return r.rewritten }

// maxSnappyExpansion bounds how much a snappy block can expand: its most compact element is a copy
// with a 2-byte offset, 3 bytes for up to 64 bytes of output (21.3 times).
const maxSnappyExpansion = 22

// DecompressSnappy decodes a snappy block-format body into a buffer from the pool. It refuses, before
// allocating anything, a body whose declared decoded length exceeds maxSize (ErrTooLarge) or more
// than such a body could decode to (ErrMalformed). The caller must hand the
// returned buffer back with bufPool.Put once nothing refers to it any more (see Label).
func DecompressSnappy(body []byte, maxSize int) (*[]byte, error) {
	n, err := SnappyDecodedLen(body, maxSize)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		// The pool does not like zero-length requests; an empty WriteRequest decodes from no bytes.
		b := []byte{}
		return &b, nil
	}
	buf := bufPool.Get(n)
	out, err := snappy.Decode(*buf, body)
	if err != nil {
		bufPool.Put(buf)
		return nil, fmt.Errorf("%w: snappy: %v", ErrMalformed, err)
	}
	if len(out) != n || (n > 0 && &out[0] != &(*buf)[0]) {
		// Cannot happen: Decode writes into dst when it is long enough.
		bufPool.Put(buf)
		return nil, fmt.Errorf("%w: snappy: decoded %d bytes, header said %d", ErrMalformed, len(out), n)
	}
	return buf, nil
}

// SnappyDecodedLen returns the decompressed size a snappy block-format body declares, after
// checking it against maxSize (ErrTooLarge) and against what the body can hold (ErrMalformed: a
// header claiming more than maxSnappyExpansion times the body is a lie). It allocates nothing.
func SnappyDecodedLen(body []byte, maxSize int) (int, error) {
	n, err := snappy.DecodedLen(body)
	if err != nil {
		return 0, fmt.Errorf("%w: snappy: %v", ErrMalformed, err)
	}
	if n > maxSize {
		return 0, fmt.Errorf("%w: decompressed size %d bytes exceeds the limit of %d bytes (-distributor.max-recv-msg-size)", ErrTooLarge, n, maxSize)
	}
	if n/maxSnappyExpansion > len(body) {
		return 0, fmt.Errorf("%w: snappy: the header claims a decompressed size of %d bytes, more than a body of %d bytes can hold (snappy expands at most %d times)",
			ErrMalformed, n, len(body), maxSnappyExpansion)
	}
	return n, nil
}

// decodeError is a protobuf decoding error with the offset where it was found.
func decodeError(off int, format string, args ...any) error {
	return fmt.Errorf("%w: protobuf at byte %d: %s", ErrMalformed, off, fmt.Sprintf(format, args...))
}

// The decoder follows the generated gogo/protobuf code of prompb (the reference implementation
// remote-write receivers are compared with) decision for decision, so that it accepts every body
// prompb accepts and reads the same values from it (FuzzDecodeWriteRequest checks this):
//   - varints of up to 10 bytes, excess high bits ignored; lengths must fit in what remains;
//   - a known field with the wrong wire type is an error; field number 0 (or one that overflows
//     int32) is an error; an end-group tag outside a group is an error;
//   - unknown fields of wire types 0, 1, 2, 5 and whole groups (3 ... 4) are skipped;
//   - for scalar fields, the last occurrence wins; repeated messages are appended in order.
// Exemplars and metadata are decoded as prompb decodes them (exemplars.go); where prompb decodes
// more (histograms), this decoder only skips, so it may accept bodies prompb refuses for a
// malformed histogram; it never refuses a body prompb accepts.

// uvarint reads a varint at b[i:] the way gogo does.
func uvarint(b []byte, i int) (uint64, int, error) {
	var v uint64
	for shift := uint(0); ; shift += 7 {
		if shift >= 64 {
			return 0, i, decodeError(i, "varint overflows 64 bits")
		}
		if i >= len(b) {
			return 0, i, decodeError(i, "truncated varint")
		}
		c := b[i]
		i++
		v |= uint64(c&0x7F) << shift
		if c < 0x80 {
			return v, i, nil
		}
	}
}

// tag reads a field tag and applies gogo's checks for it.
func tag(b []byte, i int, msg string) (field int32, wire int, next int, err error) {
	start := i
	t, i, err := uvarint(b, i)
	if err != nil {
		return 0, 0, i, err
	}
	field, wire = int32(t>>3), int(t&7)
	if wire == 4 {
		return 0, 0, i, decodeError(start, "%s: end-group tag outside a group", msg)
	}
	if field <= 0 {
		return 0, 0, i, decodeError(start, "%s: illegal tag %d (wire type %d)", msg, field, wire)
	}
	return field, wire, i, nil
}

// length reads the length of a length-delimited field and checks that it fits in b.
func length(b []byte, i int) (int, int, error) {
	n, i, err := uvarint(b, i)
	if err != nil {
		return 0, i, err
	}
	if n > uint64(len(b)-i) {
		return 0, i, decodeError(i, "length %d exceeds the %d bytes left", n, len(b)-i)
	}
	return int(n), i, nil
}

// want checks a known field's wire type.
func want(wire, expected, off int, msg, field string) error {
	if wire != expected {
		return decodeError(off, "%s.%s: wrong wire type %d, want %d", msg, field, wire, expected)
	}
	return nil
}

// skip skips the value of an unknown field whose tag (with wire type wire) ended at b[i-1], including
// whole groups, as gogo's skipTypes does.
func skip(b []byte, i, wire int) (int, error) {
	depth := 0
	for {
		switch wire {
		case 0:
			var err error
			if _, i, err = uvarint(b, i); err != nil {
				return i, err
			}
		case 1:
			if len(b)-i < 8 {
				return i, decodeError(i, "truncated fixed64")
			}
			i += 8
		case 2:
			n, j, err := length(b, i)
			if err != nil {
				return j, err
			}
			i = j + n
		case 3:
			depth++
		case 4:
			if depth == 0 {
				return i, decodeError(i, "unexpected end of group")
			}
			depth--
		case 5:
			if len(b)-i < 4 {
				return i, decodeError(i, "truncated fixed32")
			}
			i += 4
		default:
			return i, decodeError(i, "illegal wire type %d", wire)
		}
		if depth == 0 {
			return i, nil
		}
		// Inside a group: read the next tag (any field number, as gogo does).
		if i >= len(b) {
			return i, decodeError(i, "truncated group")
		}
		t, j, err := uvarint(b, i)
		if err != nil {
			return j, err
		}
		i, wire = j, int(t&7)
	}
}

// yolo returns a string aliasing b without copying (see Label for the lifetime rule).
func yolo(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// Unmarshal decodes a WriteRequest from b (the decompressed body), resetting r first. Label strings
// alias b: b must outlive every use of r's labels (see Label). On error r holds a partial decode that
// must not be used.
func (r *WriteRequest) Unmarshal(b []byte) error {
	return r.UnmarshalLimited(b, DecodeLimits{})
}

// UnmarshalLimited is Unmarshal within lim: a request over a bound fails with an error wrapping
// ErrTooLarge, found before the decoder allocates for what is over it. Within the bounds it decodes
// exactly what Unmarshal decodes.
func (r *WriteRequest) UnmarshalLimited(b []byte, lim DecodeLimits) error {
	r.Reset()
	r.maxSeries, r.budget, r.expansion, r.bodyLen, r.grown, r.histBytes = lim.MaxSeries, 0, lim.MaxExpansion, len(b), 0, 0
	if lim.MaxExpansion > 0 {
		r.budget = lim.MaxExpansion*len(b) + decodeSlackBytes
	}
	for i := 0; i < len(b); {
		start := i
		field, wire, j, err := tag(b, i, "WriteRequest")
		if err != nil {
			return err
		}
		i = j
		switch field {
		case 1: // timeseries
			if err := want(wire, 2, start, "WriteRequest", "timeseries"); err != nil {
				return err
			}
			n, j, err := length(b, i)
			if err != nil {
				return err
			}
			if err := r.decodeSeries(b[j:j+n], j); err != nil {
				return err
			}
			r.Series[len(r.Series)-1].Raw = b[start : j+n : j+n]
			i = j + n
		case 3: // metadata
			if err := want(wire, 2, start, "WriteRequest", "metadata"); err != nil {
				return err
			}
			n, j, err := length(b, i)
			if err != nil {
				return err
			}
			if err := r.decodeMetadata(b[j:j+n], j); err != nil {
				return err
			}
			r.Metadata++
			i = j + n
		default:
			if i, err = skip(b, i, wire); err != nil {
				return err
			}
		}
	}
	r.finish()
	return nil
}

// finish points every series into the arenas, which are complete, and totals the counts.
func (r *WriteRequest) finish() {
	for k := range r.Series {
		s := &r.Series[k]
		s.Labels = r.labels[s.labelStart:s.labelEnd:s.labelEnd]
		s.Samples = r.samples[s.sampleStart:s.sampleEnd:s.sampleEnd]
		r.Exemplars += s.Exemplars
		r.Histograms += s.Histograms
	}
	r.finishExtras()
}

// decodeSeries decodes one TimeSeries message b (found at offset base of the body) into a new series.
func (r *WriteRequest) decodeSeries(b []byte, base int) error {
	// Checked before anything of the series is decoded: nothing is allocated for the one too many.
	if r.maxSeries > 0 && len(r.Series) >= r.maxSeries {
		return fmt.Errorf("%w: the request has more than %d series (-distributor.max-series-per-request): send smaller requests (Prometheus: queue_config.max_samples_per_send)",
			ErrTooLarge, r.maxSeries)
	}
	s := Series{labelStart: int32(len(r.labels)), sampleStart: int32(len(r.samples)), exStart: int32(len(r.exemplars)), canonical: true}
	for i := 0; i < len(b); {
		start := i
		field, wire, j, err := tag(b, i, "TimeSeries")
		if err != nil {
			return offset(err, base)
		}
		i = j
		switch field {
		case 1, 2, 3, 4:
			name := [...]string{1: "labels", 2: "samples", 3: "exemplars", 4: "histograms"}[field]
			if err := want(wire, 2, base+start, "TimeSeries", name); err != nil {
				return err
			}
			n, j, err := length(b, i)
			if err != nil {
				return offset(err, base)
			}
			m := b[j : j+n]
			switch field {
			case 1:
				l, canon, err := decodeLabel(m, base+j)
				if err != nil {
					return err
				}
				s.canonical = s.canonical && canon
				if len(r.labels) == cap(r.labels) {
					if err := r.growLabels(); err != nil {
						return err
					}
				}
				r.labels = append(r.labels, l)
			case 2:
				smp, canon, err := decodeSample(m, base+j)
				if err != nil {
					return err
				}
				s.canonical = s.canonical && canon
				if len(r.samples) == cap(r.samples) {
					if err := r.growSamples(); err != nil {
						return err
					}
				}
				r.samples = append(r.samples, smp)
			case 3:
				if err := r.decodeExemplar(m, base+j); err != nil {
					return err
				}
				s.Exemplars++
				s.canonical = false
			case 4:
				h, err := decodeHistogramV1(m, base+j)
				if err != nil {
					return err
				}
				if err := r.chargeHistogram(&h); err != nil {
					return err
				}
				// Raw stays canonical: the ingester decodes field 4 with the same code
				// (ingesterpb.DecodeHistogram), so forwarding it gives exactly what was validated.
				s.Hists = append(s.Hists, h)
				s.Histograms++
			}
			i = j + n
		default:
			s.canonical = false
			if i, err = skip(b, i, wire); err != nil {
				return offset(err, base)
			}
		}
	}
	if len(r.labels) > math.MaxInt32 || len(r.samples) > math.MaxInt32 || len(r.exLabels) > math.MaxInt32 || len(r.exemplars) > math.MaxInt32 {
		return decodeError(base, "too many labels or samples")
	}
	s.labelEnd, s.sampleEnd = int32(len(r.labels)), int32(len(r.samples))
	if len(r.Series) == cap(r.Series) {
		if err := r.growSeries(); err != nil {
			return err
		}
	}
	r.Series = append(r.Series, s)
	return nil
}

// offset moves a decode error found in a sub-message by base bytes. Sub-message errors are rare, so
// the rewrite only costs on the error path.
func offset(err error, base int) error {
	if base == 0 {
		return err
	}
	return fmt.Errorf("%w (in the message at byte %d)", err, base)
}

// decodeLabel decodes a Label message. canonical is false when the message has anything but one name
// and one value field.
func decodeLabel(b []byte, base int) (Label, bool, error) {
	var l Label
	names, values, unknown := 0, 0, false
	for i := 0; i < len(b); {
		start := i
		field, wire, j, err := tag(b, i, "Label")
		if err != nil {
			return l, false, offset(err, base)
		}
		i = j
		switch field {
		case 1, 2:
			if err := want(wire, 2, base+start, "Label", [...]string{1: "name", 2: "value"}[field]); err != nil {
				return l, false, err
			}
			n, j, err := length(b, i)
			if err != nil {
				return l, false, offset(err, base)
			}
			if field == 1 {
				l.Name = yolo(b[j : j+n])
				names++
			} else {
				l.Value = yolo(b[j : j+n])
				values++
			}
			i = j + n
		default:
			unknown = true
			if i, err = skip(b, i, wire); err != nil {
				return l, false, offset(err, base)
			}
		}
	}
	return l, names == 1 && values == 1 && !unknown, nil
}

// decodeSample decodes a Sample message. canonical is false when a field repeats or is unknown.
func decodeSample(b []byte, base int) (Sample, bool, error) {
	var s Sample
	values, stamps, unknown := 0, 0, false
	for i := 0; i < len(b); {
		start := i
		field, wire, j, err := tag(b, i, "Sample")
		if err != nil {
			return s, false, offset(err, base)
		}
		i = j
		switch field {
		case 1:
			if err := want(wire, 1, base+start, "Sample", "value"); err != nil {
				return s, false, err
			}
			if len(b)-i < 8 {
				return s, false, decodeError(base+i, "Sample.value: truncated double")
			}
			s.Value = math.Float64frombits(binary.LittleEndian.Uint64(b[i:]))
			values++
			i += 8
		case 2:
			if err := want(wire, 0, base+start, "Sample", "timestamp"); err != nil {
				return s, false, err
			}
			v, j, err := uvarint(b, i)
			if err != nil {
				return s, false, offset(err, base)
			}
			s.TimestampMs = int64(v)
			stamps++
			i = j
		default:
			unknown = true
			if i, err = skip(b, i, wire); err != nil {
				return s, false, offset(err, base)
			}
		}
	}
	return s, values <= 1 && stamps <= 1 && !unknown, nil
}

// appendSeries appends s as a `timeseries` field (tag 1) of a PushRequest: the canonical encoding of
// its labels and samples, which is also what prompb would write. The distributor uses it for series it
// had to change (labels sorted or dropped, samples filtered) or whose Raw was not canonical.
func appendSeries(dst []byte, s *Series) []byte { return appendSeriesEx(dst, s, nil) }

// appendSeriesEx is appendSeries with the series' exemplars exs (TimeSeries field 3) after its
// samples.
func appendSeriesEx(dst []byte, s *Series, exs []Exemplar) []byte {
	size := 0
	if len(exs) > 0 {
		size = exemplarsSize(exs)
	}
	for _, l := range s.Labels {
		m := labelSize(l)
		size += 1 + uvarintLen(uint64(m)) + m
	}
	for _, smp := range s.Samples {
		m := sampleSize(smp)
		size += 1 + uvarintLen(uint64(m)) + m
	}
	if len(s.Hists) > 0 {
		size += histogramsSize(s.Hists)
	}
	dst = append(dst, 0x0a)
	dst = binary.AppendUvarint(dst, uint64(size))
	for _, l := range s.Labels {
		dst = append(dst, 0x0a)
		dst = binary.AppendUvarint(dst, uint64(labelSize(l)))
		if l.Name != "" {
			dst = append(dst, 0x0a)
			dst = binary.AppendUvarint(dst, uint64(len(l.Name)))
			dst = append(dst, l.Name...)
		}
		if l.Value != "" {
			dst = append(dst, 0x12)
			dst = binary.AppendUvarint(dst, uint64(len(l.Value)))
			dst = append(dst, l.Value...)
		}
	}
	for _, smp := range s.Samples {
		dst = append(dst, 0x12)
		dst = binary.AppendUvarint(dst, uint64(sampleSize(smp)))
		if smp.Value != 0 || math.Signbit(smp.Value) {
			dst = append(dst, 0x09)
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(smp.Value))
		}
		if smp.TimestampMs != 0 {
			dst = append(dst, 0x10)
			dst = binary.AppendUvarint(dst, uint64(smp.TimestampMs))
		}
	}
	if len(exs) > 0 {
		dst = appendExemplars(dst, exs)
	}
	if len(s.Hists) > 0 {
		dst = appendHistograms(dst, s.Hists)
	}
	return dst
}

// seriesSize is len(appendSeries(nil, s)).
func seriesSize(s *Series) int { return seriesSizeEx(s, nil) }

// seriesSizeEx is len(appendSeriesEx(nil, s, exs)).
func seriesSizeEx(s *Series, exs []Exemplar) int {
	size := 0
	if len(exs) > 0 {
		size = exemplarsSize(exs)
	}
	for _, l := range s.Labels {
		m := labelSize(l)
		size += 1 + uvarintLen(uint64(m)) + m
	}
	for _, smp := range s.Samples {
		m := sampleSize(smp)
		size += 1 + uvarintLen(uint64(m)) + m
	}
	if len(s.Hists) > 0 {
		size += histogramsSize(s.Hists)
	}
	return 1 + uvarintLen(uint64(size)) + size
}

func labelSize(l Label) int {
	n := 0
	if l.Name != "" {
		n += 1 + uvarintLen(uint64(len(l.Name))) + len(l.Name)
	}
	if l.Value != "" {
		n += 1 + uvarintLen(uint64(len(l.Value))) + len(l.Value)
	}
	return n
}

func sampleSize(s Sample) int {
	n := 0
	// proto3 omits a zero double, but -0 has its sign bit set and must be written to survive.
	if s.Value != 0 || math.Signbit(s.Value) {
		n += 9
	}
	if s.TimestampMs != 0 {
		n += 1 + uvarintLen(uint64(s.TimestampMs))
	}
	return n
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
