package querier

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// snappyBomb is a 6-byte snappy block whose header claims a decoded length of 4 GiB - 1: a
// decoder that trusts the header allocates that much before finding the rest missing.
func snappyBomb() []byte {
	b := binary.AppendUvarint(nil, 1<<32-1)
	return append(b, 0x00) // a literal tag with nothing after it
}

func postRead(t *testing.T, url string, body io.Reader, contentLength int64) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/prometheus/api/v1/read", body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = contentLength
	req.Header.Set("Content-Encoding", "snappy")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A 6-byte body announcing 4 GiB is refused with 413 before anything is allocated for it: the
// handler checks snappy.DecodedLen against MaxRemoteReadQuerySize first. (snappy.Decode(nil, body)
// allocated the 4 GiB the header claims, then failed with 400.)
func TestRemoteRead_SnappyBombRefusedBeforeAllocating(t *testing.T) {
	srv := testAPI(t, false, nil)
	bomb := snappyBomb()
	if len(bomb) != 6 {
		t.Fatalf("bomb is %d bytes", len(bomb))
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	code, body := postRead(t, srv.URL, bytes.NewReader(bomb), int64(len(bomb)))
	runtime.ReadMemStats(&after)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "decodes to 4294967295 bytes, more than the limit of 1048576 bytes") {
		t.Fatalf("snappy bomb: %d %q; want 413 naming the claimed size and the limit", code, body)
	}
	// The test server runs in this process: its allocations show in TotalAlloc.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Fatalf("answering a 6-byte request allocated %d MiB", grew>>20)
	}

	// Just over the limit is refused, the limit itself is not (it is then an invalid request).
	for _, c := range []struct {
		claim int
		code  int
	}{{MaxRemoteReadQuerySize + 1, http.StatusRequestEntityTooLarge}, {MaxRemoteReadQuerySize, http.StatusBadRequest}} {
		b := append(binary.AppendUvarint(nil, uint64(c.claim)), 0x00)
		if code, body := postRead(t, srv.URL, bytes.NewReader(b), int64(len(b))); code != c.code {
			t.Errorf("claimed %d bytes: %d %q; want %d", c.claim, code, body, c.code)
		}
	}
}

// A compressed body over the bound is refused with 413, whether its Content-Length says so up front
// or it arrives chunked without one (http.MaxBytesReader cuts it off).
func TestRemoteRead_BodyTooLargeRefused(t *testing.T) {
	srv := testAPI(t, false, nil)
	big := bytes.Repeat([]byte{0xff}, maxRemoteReadBodySize+1)
	for _, cl := range []int64{int64(len(big)), -1} {
		code, body := postRead(t, srv.URL, bytes.NewReader(big), cl)
		if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "larger than the limit of") {
			t.Errorf("Content-Length %d: %d %q; want 413", cl, code, body)
		}
	}
	// Garbage that is not snappy: 400 with the decoder's reason.
	if code, body := postRead(t, srv.URL, strings.NewReader("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), -1); code != http.StatusBadRequest || !strings.Contains(body, "snappy") {
		t.Errorf("not snappy: %d %q; want 400", code, body)
	}
	// A good request still works.
	rr := &prompb.ReadRequest{Queries: []*prompb.Query{{StartTimestampMs: 0, EndTimestampMs: 600_000,
		Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: "up"}}}}}
	if resp, b := remoteReadReq(t, srv, rr); resp.StatusCode != http.StatusOK {
		t.Fatalf("good request: %d %s", resp.StatusCode, b)
	}
}

// FuzzRemoteReadRequest feeds arbitrary bodies to the remote-read decoder. It must never panic,
// never accept a request that decodes to more than MaxRemoteReadQuerySize, and what it accepts must
// survive a round trip (marshal, compress, decode) unchanged; its matchers are converted as the
// handler does, which must not panic either. The seeds (and testdata/fuzz/FuzzRemoteReadRequest)
// run with every go test.
func FuzzRemoteReadRequest(f *testing.F) {
	good := &prompb.ReadRequest{
		Queries: []*prompb.Query{{StartTimestampMs: 1, EndTimestampMs: 2, Matchers: []*prompb.LabelMatcher{
			{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: "up"},
			{Type: prompb.LabelMatcher_RE, Name: "job", Value: "a|b.*"},
			{Type: prompb.LabelMatcher_NRE, Name: "x", Value: "(unclosed"},
		}, Hints: &prompb.ReadHints{StepMs: 15, Func: "rate", StartMs: 1, EndMs: 2, Grouping: []string{"job"}, By: true, RangeMs: 300}}},
		AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS, 7},
	}
	raw, err := good.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(snappy.Encode(nil, raw))
	f.Add(raw) // not compressed
	f.Add(snappyBomb())
	f.Add(append(binary.AppendUvarint(nil, MaxRemoteReadQuerySize+1), 0x00))
	f.Add([]byte{})
	f.Add(snappy.Encode(nil, []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})) // a field length past the end
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeReadRequestBody(body)
		if err != nil {
			var he httpError
			if !errors.As(err, &he) || (he.status != http.StatusBadRequest && he.status != http.StatusRequestEntityTooLarge) {
				t.Fatalf("error %v: want a 400 or 413 httpError", err)
			}
			return
		}
		if n, _ := snappy.DecodedLen(body); n > MaxRemoteReadQuerySize {
			t.Fatalf("accepted a request decoding to %d bytes", n)
		}
		for _, q := range req.Queries {
			_, _ = fromLabelMatchers(q.Matchers)
			_ = selectHints(q)
		}
		_, _ = negotiateResponseType(req.AcceptedResponseTypes)
		if !canonicalReadRequest(req) {
			return
		}
		again, err := req.Marshal()
		if err != nil {
			t.Fatalf("marshal a decoded request: %v", err)
		}
		req2, err := decodeReadRequestBody(snappy.Encode(nil, again))
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		again2, err := req2.Marshal()
		if err != nil || !bytes.Equal(again, again2) {
			t.Fatalf("round trip changed the request: %v", err)
		}
	})
}

// canonicalReadRequest reports whether req holds only known fields and enum values: prompb's
// generated (gogo) code re-marshals unknown fields and negative enum values into bytes it cannot
// read back. The handler never re-marshals a request, so the round trip is checked on the rest.
func canonicalReadRequest(req *prompb.ReadRequest) bool {
	if len(req.XXX_unrecognized) > 0 {
		return false
	}
	for _, t := range req.AcceptedResponseTypes {
		if _, ok := prompb.ReadRequest_ResponseType_name[int32(t)]; !ok {
			return false
		}
	}
	for _, q := range req.Queries {
		if q == nil || len(q.XXX_unrecognized) > 0 || (q.Hints != nil && len(q.Hints.XXX_unrecognized) > 0) {
			return false
		}
		for _, m := range q.Matchers {
			if m == nil || len(m.XXX_unrecognized) > 0 {
				return false
			}
			if _, ok := prompb.LabelMatcher_Type_name[int32(m.Type)]; !ok {
				return false
			}
		}
	}
	return true
}
