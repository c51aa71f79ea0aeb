package transfer

import (
	"encoding/binary"
	"math"
	"math/bits"

	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/raftingest/raftingest/memstore"
)

// The joiner decodes every received chunk in full (validate.go). chunkenc's iterator does that at
// ~13 ns a sample, through an interface, with error returns and refills on every read; walkXOR is
// the same walk specialised for validation: one bounds check per read, no error values, and it
// keeps only what the checks need (the previous timestamp, the last value).
//
// It is exactly as strict as decodeChunk (chunkenc's iterator) by construction:
//
//   - walkXOR reads the bits chunkenc's iterator reads, in the same order, with the same
//     arithmetic (the delta-of-delta buckets and their sign rule, the XOR window of leading and
//     significant bits, wrapping int64 timestamps), as long as every read lies within the chunk's
//     bytes. Within the bytes chunkenc's bit reader returns the stream's bits in order; it
//     behaves otherwise only when the stream runs out, where walkXOR gives up.
//   - It gives up (ok false) on anything outside the path every well-formed chunk takes: a read
//     past the end, a varint that does not decode, a window whose leading and significant bits
//     exceed 64 bits (chunkenc then shifts by wrapped amounts), and every check that fails. Then
//     decodeChunkFast asks decodeChunk, whose answer (and error message) is returned as it is.
//   - When walkXOR accepts a chunk, every check decodeChunk makes held on the same samples, so
//     decodeChunk accepts it too, with the same last value bit for bit.
//
// TestWalkXOR_AgreesWithChunkenc (valid chunks of many shapes, every truncation, bit flips, header
// changes) and FuzzWalkXOR check this against decodeChunk.

// decodeChunkFast is decodeChunk, fast for well-formed chunks: it returns what decodeChunk
// returns for every input (see above). it is decodeChunk's reusable iterator.
func decodeChunkFast(c memstore.Chunk, it chunkenc.Iterator) (lastV float64, _ chunkenc.Iterator, err error) {
	if c.Encoding == chunkenc.EncXOR {
		if v, ok := walkXOR(c.Data, c.MinTime, c.MaxTime); ok {
			return v, it, nil
		}
	}
	return decodeChunk(c, it) // native histogram chunks too: decodeChunk checks them whole
}

// decodeHistogramChunk is decodeChunk for native histogram chunks: decoded whole by chunkenc and
// every histogram validated (memstore.CheckHistogramChunk: count, time order, bounds,
// histogram.Validate). A series whose newest sample is a histogram has no float last value: the
// store hands over 0.
func decodeHistogramChunk(c memstore.Chunk, it chunkenc.Iterator) (float64, chunkenc.Iterator, error) {
	return 0, it, memstore.CheckHistogramChunk(c)
}

// refill loads as many whole bytes of b from byte i on as fit below the n bits already loaded at
// the top of w, and returns the new i, w and n. Bits of w below the n loaded ones are either zero
// or the next bits of b (a full 8-byte load also ORs in the top of a byte it does not count, which
// the next refill ORs in again at the same place), so only the top n bits are ever used.
//
//go:noinline
func refill(b []byte, i int, w uint64, n uint) (int, uint64, uint) {
	if i+8 <= len(b) {
		w |= binary.BigEndian.Uint64(b[i:]) >> n
		k := (64 - n) >> 3
		return i + int(k), w, n + k*8
	}
	for n <= 56 && i < len(b) {
		w |= uint64(b[i]) << (56 - n)
		i++
		n += 8
	}
	return i, w, n
}

// walkXOR decodes every sample of the XOR chunk data (2-byte sample count, then the bit stream)
// and checks what decodeChunk checks: at least one sample, the first at minT, timestamps strictly
// increasing, the last at maxT. It returns the last sample's value and true, or false when the
// chunk is not one it can vouch for (see above; the caller then asks decodeChunk). It never
// panics and never allocates.
//
// The bit reader is inlined by hand (the compiler would not inline it as a method): w holds nb
// loaded bits at its top, i is the next byte of b to load; a read of k bits (1 to 56) first
// ensures nb >= k by refill, and gives up when the stream has fewer bits left.
func walkXOR(data []byte, minT, maxT int64) (lastV float64, ok bool) {
	if len(data) < 2 || minT > maxT {
		return 0, false
	}
	want := int(binary.BigEndian.Uint16(data))
	if want == 0 {
		return 0, false
	}
	stream := data[2:]
	// Sample 0: varint timestamp (byte-aligned at the start), 64 raw value bits.
	t, k := binary.Varint(stream)
	if k <= 0 || t != minT {
		return 0, false
	}
	if len(stream)-k < 8 {
		return 0, false
	}
	vbits := binary.BigEndian.Uint64(stream[k:])
	if want == 1 {
		return math.Float64frombits(vbits), t == maxT
	}
	// Sample 1: uvarint delta (still byte-aligned: a varint and 64 bits so far), then a value.
	tDelta, k2 := binary.Uvarint(stream[k+8:])
	if k2 <= 0 {
		return 0, false
	}
	b := stream[k+8+k2:]
	var (
		i  int
		w  uint64
		nb uint
	)
	var leading, trailing uint // the XOR window; chunkenc's iterator starts it at 0, 0
	prevT := t
	for n := 1; ; n++ {
		if n > 1 {
			// Delta of delta: '0', '10'+14 bits, '110'+17, '1110'+20, '1111'+64.
			var d uint
			if nb < 4 {
				i, w, nb = refill(b, i, w, nb)
			}
			if nb >= 4 {
				// The prefix is up to four bits: count its leading ones at once.
				ones := uint(bits.LeadingZeros64(^w))
				if ones > 4 {
					ones = 4
				}
				used := min(ones+1, 4)
				d = uint(w >> (64 - used))
				w <<= used
				nb -= used
			} else {
				for range 4 {
					if nb < 1 {
						return 0, false
					}
					one := w >> 63
					w <<= 1
					nb--
					d = d<<1 | uint(one)
					if one == 0 {
						break
					}
				}
			}
			var dod int64
			switch d {
			case 0b0:
			case 0b10, 0b110, 0b1110:
				sz := uint(14)
				if d == 0b110 {
					sz = 17
				} else if d == 0b1110 {
					sz = 20
				}
				if nb < sz {
					if i, w, nb = refill(b, i, w, nb); nb < sz {
						return 0, false
					}
				}
				bits := w >> (64 - sz)
				w <<= sz
				nb -= sz
				if bits > 1<<(sz-1) { // chunkenc's sign rule, strict '>' included
					bits -= 1 << sz
				}
				dod = int64(bits)
			default: // 0b1111: 64 bits, read as 32 + 32
				var bits uint64
				for range 2 {
					if nb < 32 {
						if i, w, nb = refill(b, i, w, nb); nb < 32 {
							return 0, false
						}
					}
					bits = bits<<32 | w>>32
					w <<= 32
					nb -= 32
				}
				dod = int64(bits)
			}
			tDelta = uint64(int64(tDelta) + dod)
		}
		t += int64(tDelta)
		if t <= prevT {
			return 0, false
		}
		prevT = t
		// The value: '0' same as before; '10' XOR in the previous window; '11' + 5 bits of
		// leading zeros + 6 bits of significant bits (0 meaning 64) + the bits.
		if nb < 1 {
			if i, w, nb = refill(b, i, w, nb); nb < 1 {
				return 0, false
			}
		}
		ctl := w >> 63
		w <<= 1
		nb--
		if ctl == 1 {
			if nb < 1 {
				if i, w, nb = refill(b, i, w, nb); nb < 1 {
					return 0, false
				}
			}
			ctl = w >> 63
			w <<= 1
			nb--
			if ctl == 1 {
				if nb < 11 {
					if i, w, nb = refill(b, i, w, nb); nb < 11 {
						return 0, false
					}
				}
				l, m := uint(w>>59), uint(w>>53)&0x3f
				w <<= 11
				nb -= 11
				if m == 0 {
					m = 64
				}
				if l+m > 64 {
					return 0, false // chunkenc would go on with a wrapped window: leave it to it
				}
				leading, trailing = l, 64-l-m
			}
			mbits := 64 - leading - trailing // 1 to 64
			var bits uint64
			if mbits > 32 {
				if nb < mbits-32 {
					if i, w, nb = refill(b, i, w, nb); nb < mbits-32 {
						return 0, false
					}
				}
				bits = w >> (64 - (mbits - 32))
				w <<= mbits - 32
				nb -= mbits - 32
				mbits = 32
			}
			if nb < mbits {
				if i, w, nb = refill(b, i, w, nb); nb < mbits {
					return 0, false
				}
			}
			bits = bits<<mbits | w>>(64-mbits)
			w <<= mbits
			nb -= mbits
			vbits ^= bits << trailing
		}
		if n == want-1 {
			break
		}
	}
	return math.Float64frombits(vbits), prevT == maxT
}
