package transfer

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/transferpb"
)

func xorChunk(t testing.TB, ts []int64, vs []float64) memstore.Chunk {
	c := chunkenc.NewXORChunk()
	app, err := c.Appender()
	if err != nil {
		t.Fatal(err)
	}
	for i := range ts {
		app.Append(ts[i], vs[i])
	}
	return memstore.Chunk{MinTime: ts[0], MaxTime: ts[len(ts)-1], Encoding: chunkenc.EncXOR, Data: bytes.Clone(c.Bytes())}
}

func sameSeries(a, b []Series) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Tenant != b[i].Tenant || !labels.Equal(a[i].Labels, b[i].Labels) || len(a[i].Chunks) != len(b[i].Chunks) {
			return false
		}
		for j, c := range a[i].Chunks {
			d := b[i].Chunks[j]
			if c.MinTime != d.MinTime || c.MaxTime != d.MaxTime || c.Encoding != d.Encoding || !bytes.Equal(c.Data, d.Data) {
				return false
			}
		}
		if a[i].HasLastV != b[i].HasLastV || math.Float64bits(a[i].LastV) != math.Float64bits(b[i].LastV) {
			return false
		}
	}
	return true
}

func TestFrame_SeriesRoundTrip(t *testing.T) {
	stale := math.Float64frombits(0x7ff0000000000002) // Prometheus stale marker: must survive bit-exact
	in := []Series{
		{Tenant: "t1", Labels: labels.FromStrings("__name__", "up", "job", "a"),
			Chunks: []memstore.Chunk{xorChunk(t, []int64{1, 2, 3}, []float64{1, math.NaN(), stale}), xorChunk(t, []int64{10}, []float64{-1})}},
		{Tenant: "", Labels: labels.FromStrings("a", "")},
	}
	for _, v := range []uint32{FrameVersion1, FrameVersion} {
		want := slices.Clone(in)
		if v >= 2 {
			want[0].LastV, want[0].HasLastV = -1, true
			want[1].LastV, want[1].HasLastV = stale, true
		}
		out, err := decodeSeries(encodeSeries(want, v), v)
		if err != nil {
			t.Fatal(err)
		}
		if !sameSeries(want, out) {
			t.Fatalf("version %d: round trip changed the series:\n%v\n%v", v, want, out)
		}
	}
}

func TestFrame_ChecksumCoversEveryField(t *testing.T) {
	base := func() *transferpb.Frame {
		return sealFrame(&transferpb.Frame{Leaver: "c", Epoch: 7, Seq: 3, Kind: transferpb.FrameKind_FRAME_KIND_SERIES, Payload: []byte{1, 2, 3}})
	}
	if err := checkFrame(base()); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(f *transferpb.Frame){
		"leaver":  func(f *transferpb.Frame) { f.Leaver = "d" },
		"epoch":   func(f *transferpb.Frame) { f.Epoch++ },
		"seq":     func(f *transferpb.Frame) { f.Seq++ },
		"kind":    func(f *transferpb.Frame) { f.Kind = transferpb.FrameKind_FRAME_KIND_TRAILER },
		"payload": func(f *transferpb.Frame) { f.Payload[1] ^= 1 },
	} {
		f := base()
		mut(f)
		if err := checkFrame(f); !errors.Is(err, ErrCorruptFrame) {
			t.Errorf("%s changed: %v, want ErrCorruptFrame", name, err)
		}
	}
	f := base()
	f.Version = FrameVersion + 1
	if err := checkFrame(f); !errors.Is(err, ErrUnknownFrameVersion) {
		t.Errorf("future version: %v, want ErrUnknownFrameVersion", err)
	}
}

func TestFrame_TruncatedPayloadIsRefused(t *testing.T) {
	for _, v := range []uint32{FrameVersion1, FrameVersion} {
		p := encodeSeries([]Series{{Tenant: "t", Labels: labels.FromStrings("a", "b"),
			Chunks: []memstore.Chunk{xorChunk(t, []int64{1, 2}, []float64{1, 2})}, LastV: 2, HasLastV: v >= 2}}, v)
		for n := range len(p) {
			if _, err := decodeSeries(p[:n], v); !errors.Is(err, ErrCorruptFrame) {
				t.Fatalf("version %d: payload cut to %d of %d bytes: %v, want ErrCorruptFrame", v, n, len(p), err)
			}
		}
	}
	if _, err := decodeTrailer(encodeTrailer(Totals{Series: 2, Chunks: 1})); !errors.Is(err, ErrCorruptFrame) {
		t.Fatalf("trailer with fewer chunks than series: %v, want ErrCorruptFrame", err)
	}
}

// FuzzDecodeSeries: the decoder never panics or over-allocates on arbitrary input, and whatever it
// accepts re-encodes to the same bytes.
func FuzzDecodeSeries(f *testing.F) {
	for _, v := range []uint32{FrameVersion1, FrameVersion} {
		f.Add(encodeSeries([]Series{{Tenant: "t", Labels: labels.FromStrings("a", "b"),
			Chunks: []memstore.Chunk{xorChunk(f, []int64{1, 5}, []float64{1, math.Inf(1)})}, LastV: math.Inf(1), HasLastV: v >= 2}}, v), v >= 2)
		f.Add([]byte{0}, v >= 2)
		f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, v >= 2)
	}
	f.Fuzz(func(t *testing.T, b []byte, v2 bool) {
		v := uint32(FrameVersion1)
		if v2 {
			v = FrameVersion
		}
		ss, err := decodeSeries(b, v)
		if err != nil {
			if !errors.Is(err, ErrCorruptFrame) {
				t.Fatalf("error %v does not wrap ErrCorruptFrame", err)
			}
			return
		}
		again, err := decodeSeries(encodeSeries(ss, v), v)
		if err != nil || !sameSeries(ss, again) {
			t.Fatalf("accepted payload does not round-trip: %v", err)
		}
	})
}

func FuzzDecodeTrailer(f *testing.F) {
	f.Add(encodeTrailer(Totals{Series: 3, Chunks: 9, Bytes: 1000}))
	f.Fuzz(func(t *testing.T, b []byte) {
		tot, err := decodeTrailer(b)
		if err != nil {
			return
		}
		if got, err := decodeTrailer(encodeTrailer(tot)); err != nil || got != tot {
			t.Fatalf("trailer %+v does not round-trip: %+v, %v", tot, got, err)
		}
	})
}

// FuzzFrame runs a hand-over frame through everything the joiner checks before it imports anything
// (checkFrame, checkSeriesFrame, checkChunks; decodeTrailer for a trailer) and asserts: no panic,
// no error outside the package's sentinels, and whatever is accepted re-encodes to series that are
// accepted again, equal to the first (labels, chunks, last values bit for bit). The seeds hold
// every kind of frame a leaver sends and the ways one can be wrong; testdata/fuzz/FuzzFrame holds
// inputs found by `go test -fuzz FuzzFrame ./transfer/`.
func FuzzFrame(f *testing.F) {
	good := func(tb testing.TB, tenant, name string) Series {
		return Series{Tenant: tenant, Labels: labels.FromStrings("__name__", name, "job", "j"),
			Chunks: []memstore.Chunk{xorChunk(tb, []int64{1, 2, 3}, []float64{1, math.NaN(), 3}), xorChunk(tb, []int64{10}, []float64{math.Copysign(0, -1)})},
			LastV:  math.Copysign(0, -1), HasLastV: true}
	}
	for _, v := range []uint32{FrameVersion1, FrameVersion} {
		ok := []Series{good(f, "a", "up"), good(f, "b", "up")}
		f.Add(uint8(v), true, encodeSeries(ok, v), "leaver-1")
		bad := []Series{good(f, "../../outside", "up")}
		f.Add(uint8(v), true, encodeSeries(bad, v), "l")
		utf := good(f, "t", "up")
		utf.Labels = labels.FromStrings("__name__", "up", "job", "\xc3\x28")
		f.Add(uint8(v), true, encodeSeries([]Series{utf}, v), "l")
		garbled := good(f, "t", "up")
		garbled.Chunks[0].Data = garbled.Chunks[0].Data[:4]
		f.Add(uint8(v), true, encodeSeries([]Series{garbled}, v), "l")
		f.Add(uint8(v), true, []byte{0}, "l")
		f.Add(uint8(v), false, encodeTrailer(Totals{Series: 2, Chunks: 4, Bytes: 100}), "l")
	}
	f.Add(uint8(3), true, []byte{1, 2, 3}, "l")
	f.Fuzz(func(t *testing.T, version uint8, series bool, payload []byte, leaver string) {
		kind := transferpb.FrameKind_FRAME_KIND_TRAILER
		if series {
			kind = transferpb.FrameKind_FRAME_KIND_SERIES
		}
		fr := sealFrameVersion(&transferpb.Frame{Leaver: leaver, Epoch: 7, Seq: 0, Kind: kind, Payload: payload}, uint32(version))
		if err := checkFrame(fr); err != nil {
			if !errors.Is(err, ErrUnknownFrameVersion) || (version == FrameVersion || version == FrameVersion1) {
				t.Fatalf("sealed frame of version %d refused: %v", version, err)
			}
			return
		}
		if !series {
			if _, err := decodeTrailer(payload); err != nil && !errors.Is(err, ErrCorruptFrame) {
				t.Fatalf("trailer error %v does not wrap ErrCorruptFrame", err)
			}
			return
		}
		const maxSize = 1 << 20
		var sc seriesChecker
		ss, err := checkSeriesFrame(fr, maxSize, &sc)
		if err == nil {
			err = checkChunks(ss)
		}
		if err != nil {
			if !errors.Is(err, ErrCorruptFrame) && !errors.Is(err, ErrInvalidSeries) {
				t.Fatalf("error %v wraps neither ErrCorruptFrame nor ErrInvalidSeries", err)
			}
			return
		}
		again := sealFrameVersion(&transferpb.Frame{Leaver: leaver, Epoch: 7, Seq: 1, Kind: kind,
			Payload: encodeSeries(ss, uint32(version))}, uint32(version))
		var sc2 seriesChecker
		ss2, err := checkSeriesFrame(again, maxSize, &sc2)
		if err == nil {
			err = checkChunks(ss2)
		}
		if err != nil {
			t.Fatalf("accepted series refused once re-encoded: %v", err)
		}
		if version == FrameVersion1 { // checkChunks gave both their last values
			for i := range ss {
				if !ss[i].HasLastV || !ss2[i].HasLastV {
					t.Fatal("an accepted version 1 series has no last value after checkChunks")
				}
			}
		}
		if !sameSeries(ss, ss2) {
			t.Fatalf("accepted series changed when re-encoded:\n%v\n%v", ss, ss2)
		}
	})
}

// Decoded labels are handed to the store as its own (no second copy) exactly when the labels
// build copies what a ScratchBuilder is given (the default, stringlabels, does); owned labels must
// not alias the frame.
func TestDecodeSeries_LabelsOwnedOnlyWhenCopied(t *testing.T) {
	ss := []Series{{Tenant: "t", Labels: labels.FromStrings("__name__", "m", "a", "b"),
		Chunks: []memstore.Chunk{xorChunk(t, []int64{1, 2}, []float64{1, 2})}, LastV: 2, HasLastV: true}}
	payload := encodeSeries(ss, FrameVersion)
	got, err := decodeSeries(payload, FrameVersion)
	if err != nil || len(got) != 1 {
		t.Fatalf("decoded %+v, %v: want one series", got, err)
	}
	if got[0].LabelsOwned != scratchLabelsCopy {
		t.Fatalf("LabelsOwned %v, but ScratchBuilder.Labels copies: %v", got[0].LabelsOwned, scratchLabelsCopy)
	}
	if !got[0].LabelsOwned {
		return
	}
	clear(payload) // owned labels must not alias the frame
	if !labels.Equal(got[0].Labels, ss[0].Labels) {
		t.Fatalf("labels %s changed with the frame's bytes, want %s", got[0].Labels, ss[0].Labels)
	}
}
