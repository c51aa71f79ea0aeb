package distributor

import (
	"fmt"
	"math"
	"unsafe"
)

// Remote-write 2.0 (io.prometheus.write.v2.Request): every string of the request — label names and
// values, metadata help and unit — is sent once in a symbols table, and a series names its labels
// by pairs of references into it. The decoder below reads it into the same WriteRequest as 1.0:
// each symbol is a string aliasing the body (no copy, as 1.0's labels), and each label of a series
// is the pair of symbols its references name, so everything after decoding — validation, placement,
// the ingesters' requests — is shared with 1.0. A 2.0 series is never forwarded as it was sent (its
// references mean nothing without the symbols table): it is re-encoded as a 1.0 series, which the
// ingesters' protocol carries.
//
// Native histograms are decoded and forwarded as in 1.0 (decode_hist.go), exemplars and metadata
// are decoded (exemplars.go) and stored as 1.0's are, and created timestamps are dropped; the
// response's X-Prometheus-Remote-Write-*-Written headers tell the sender what was written.

// ContentTypeV2 is the Content-Type of a remote-write 2.0 request.
const ContentTypeV2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"

// DefaultMaxExpansionV2 is the expansion bound of 2.0 requests. A 2.0 label is a pair of references
// of one or two bytes each where 1.0 spends the label's strings, so a decoded 2.0 request is
// naturally larger next to its body: a series of 20 labels and one sample decodes to about 14 times
// its encoded size, and a label to at most 16 times (32 bytes for two 1-byte references). The
// bound still stops bodies of empty series (2 bytes each, 136 decoded) short of what they would
// cost, as DefaultMaxExpansion does for 1.0.
const DefaultMaxExpansionV2 = 20

// symbolBytes is the size of one decoded symbol (a string header), for the expansion bound.
const symbolBytes = int(unsafe.Sizeof(""))

// growSymbols makes room for one more symbol within the bounds.
func (r *WriteRequest) growSymbols() error {
	c, err := r.grow("symbol", grewSymbols, len(r.symbols), cap(r.symbols), symbolBytes)
	if err != nil {
		return err
	}
	r.symbols = append(make([]string, 0, c), r.symbols...)
	r.grown |= grewSymbols
	return nil
}

// UnmarshalV2Limited decodes a remote-write 2.0 Request from b (the decompressed body) within lim,
// resetting r first, with the same lifetime rule (label strings alias b) and the same errors as
// UnmarshalLimited. It follows prompb's generated writev2 code in what it accepts, as the 1.0
// decoder follows prompb's; beyond that it checks what the generated code leaves to the receiver:
// every label reference must name a symbol of the request, and a series' references must come in
// (name, value) pairs.
func (r *WriteRequest) UnmarshalV2Limited(b []byte, lim DecodeLimits) error {
	r.Reset()
	r.v2, r.maxRewritten = true, lim.MaxRewrittenBytes
	r.maxSeries, r.budget, r.expansion, r.bodyLen, r.grown, r.histBytes = lim.MaxSeries, 0, lim.MaxExpansion, len(b), 0, 0
	if lim.MaxExpansion > 0 {
		r.budget = lim.MaxExpansion*len(b) + decodeSlackBytes
	}
	// Pass 1: the symbols, wherever they are in the message (senders write them first, but protobuf
	// allows any order, and a series cannot be decoded before the symbols it references).
	for i := 0; i < len(b); {
		start := i
		field, wire, j, err := tag(b, i, "Request")
		if err != nil {
			return err
		}
		i = j
		if field != 4 {
			if i, err = skip(b, i, wire); err != nil {
				return err
			}
			continue
		}
		if err := want(wire, 2, start, "Request", "symbols"); err != nil {
			return err
		}
		n, j, err := length(b, i)
		if err != nil {
			return err
		}
		if len(r.symbols) == cap(r.symbols) {
			if err := r.growSymbols(); err != nil {
				return err
			}
		}
		r.symbols = append(r.symbols, yolo(b[j:j+n]))
		i = j + n
	}
	// Pass 2: the series. Fields 4 (already read) and every unknown one are skipped.
	for i := 0; i < len(b); {
		start := i
		field, wire, j, err := tag(b, i, "Request")
		if err != nil {
			return err
		}
		i = j
		if field != 5 {
			if i, err = skip(b, i, wire); err != nil {
				return err
			}
			continue
		}
		if err := want(wire, 2, start, "Request", "timeseries"); err != nil {
			return err
		}
		n, j, err := length(b, i)
		if err != nil {
			return err
		}
		if err := r.decodeSeriesV2(b[j:j+n], j); err != nil {
			return err
		}
		i = j + n
	}
	r.finish()
	return nil
}

// decodeSeriesV2 decodes one 2.0 TimeSeries message b (found at offset base of the body) into a new
// series. The series is never canonical: it must be re-encoded for the ingesters.
func (r *WriteRequest) decodeSeriesV2(b []byte, base int) error {
	if r.maxSeries > 0 && len(r.Series) >= r.maxSeries {
		return fmt.Errorf("%w: the request has more than %d series (-distributor.max-series-per-request): send smaller requests (Prometheus: queue_config.max_samples_per_send)",
			ErrTooLarge, r.maxSeries)
	}
	s := Series{labelStart: int32(len(r.labels)), sampleStart: int32(len(r.samples)), exStart: int32(len(r.exemplars))}
	refs := 0 // label references read; an odd count leaves a name waiting for its value
	var name string
	addRef := func(v uint64, off int) error {
		if v >= uint64(len(r.symbols)) {
			return decodeError(off, "TimeSeries.labels_refs: reference %d names no symbol: the request has %d symbols", v, len(r.symbols))
		}
		refs++
		if refs%2 == 1 {
			name = r.symbols[v]
			return nil
		}
		l := Label{Name: name, Value: r.symbols[v]}
		if err := r.rewrite(labelSize(l) + 6); err != nil { // the label field's tag and length: at most 6
			return err
		}
		if len(r.labels) == cap(r.labels) {
			if err := r.growLabels(); err != nil {
				return err
			}
		}
		r.labels = append(r.labels, l)
		return nil
	}
	for i := 0; i < len(b); {
		start := i
		field, wire, j, err := tag(b, i, "TimeSeries")
		if err != nil {
			return offset(err, base)
		}
		i = j
		switch field {
		case 1: // labels_refs: packed (as every sender writes them) or one varint per field
			switch wire {
			case 0:
				v, j, err := uvarint(b, i)
				if err != nil {
					return offset(err, base)
				}
				if err := addRef(uint64(uint32(v)), base+i); err != nil {
					return err
				}
				i = j
			case 2:
				n, j, err := length(b, i)
				if err != nil {
					return offset(err, base)
				}
				for k, end := j, j+n; k < end; {
					v, next, err := uvarint(b[:end], k)
					if err != nil {
						return offset(err, base)
					}
					if err := addRef(uint64(uint32(v)), base+k); err != nil {
						return err
					}
					k = next
				}
				i = j + n
			default:
				return decodeError(base+start, "TimeSeries.labels_refs: wrong wire type %d, want 0 or 2", wire)
			}
		case 2, 3, 4, 5:
			fname := [...]string{2: "samples", 3: "histograms", 4: "exemplars", 5: "metadata"}[field]
			if err := want(wire, 2, base+start, "TimeSeries", fname); err != nil {
				return err
			}
			n, j, err := length(b, i)
			if err != nil {
				return offset(err, base)
			}
			switch field {
			case 2:
				smp, _, err := decodeSample(b[j:j+n], base+j)
				if err != nil {
					return err
				}
				if err := r.rewrite(2 + sampleSize(smp)); err != nil {
					return err
				}
				if len(r.samples) == cap(r.samples) {
					if err := r.growSamples(); err != nil {
						return err
					}
				}
				r.samples = append(r.samples, smp)
			case 3:
				h, err := decodeHistogramV2(b[j:j+n], base+j)
				if err != nil {
					return err
				}
				if err := r.chargeHistogram(&h); err != nil {
					return err
				}
				s.Hists = append(s.Hists, h)
				s.Histograms++
				if err := r.rewrite(n + 16); err != nil { // re-encoded as 1.0: about its own size
					return err
				}
			case 4:
				if err := r.decodeExemplarV2(b[j:j+n], base+j); err != nil {
					return err
				}
				s.Exemplars++
			case 5:
				if n > 0 { // senders write an empty Metadata for every series
					if err := r.decodeMetadataV2(b[j:j+n], base+j); err != nil {
						return err
					}
					r.Metadata++
				}
			}
			i = j + n
		case 6: // created_timestamp: read, not used
			if err := want(wire, 0, base+start, "TimeSeries", "created_timestamp"); err != nil {
				return err
			}
			if _, i, err = uvarint(b, i); err != nil {
				return offset(err, base)
			}
		default:
			if i, err = skip(b, i, wire); err != nil {
				return offset(err, base)
			}
		}
	}
	if refs%2 != 0 {
		return decodeError(base, "TimeSeries.labels_refs: %d references, want (name, value) pairs", refs)
	}
	if err := r.rewrite(6); err != nil { // the series' own tag and length
		return err
	}
	if len(r.labels) > math.MaxInt32 || len(r.samples) > math.MaxInt32 {
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

// rewrite counts n more bytes of the request re-encoded as 1.0, within MaxRewrittenBytes: 2.0
// names a label's strings by references of a byte or two, so a small body can stand for series
// far larger than any 1.0 body the distributor accepts, each copied once per replica.
func (r *WriteRequest) rewrite(n int) error {
	r.rewritten += n
	if r.maxRewritten > 0 && r.rewritten > r.maxRewritten {
		return fmt.Errorf("%w: its series re-encoded for the ingesters take more than %d bytes (-distributor.max-recv-msg-size) after %d series: the symbols it references are repeated in every series that names them; send smaller requests",
			ErrTooLarge, r.maxRewritten, len(r.Series))
	}
	return nil
}
