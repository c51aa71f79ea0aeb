package querier

// Prometheus remote read, ported from storage/remote (read_handler.go, codec.go, chunked.go): that
// package pulls the OTLP receiver's dependency tree into the module, so the few functions needed are
// re-implemented here on prompb, with the same wire behaviour.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"strconv"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/chunks"
)

// MaxRemoteReadQuerySize bounds the decoded (uncompressed) size of a remote-read request, as
// Mimir's constant of the same name does: a request is a few matchers and time ranges, and should
// never approach a megabyte. The compressed body may be at most snappy.MaxEncodedLen of it.
const MaxRemoteReadQuerySize = 1 << 20

// maxRemoteReadBodySize bounds the compressed body: the largest snappy encoding of a request of
// MaxRemoteReadQuerySize bytes.
var maxRemoteReadBodySize = snappy.MaxEncodedLen(MaxRemoteReadQuerySize)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// httpError is an error with the HTTP status remote read answers it with.
type httpError struct {
	msg    string
	status int
}

func (e httpError) Error() string { return e.msg }

// remoteRead serves one remote-read request (the tenant is already in the context).
func (q *Querier) remoteRead(w http.ResponseWriter, r *http.Request) {
	release, err := q.acquire(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer release()
	req, err := decodeReadRequest(w, r)
	if err != nil {
		remoteReadStatus(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), q.cfg.Timeout)
	defer cancel()
	typ, err := negotiateResponseType(req.AcceptedResponseTypes)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if typ == prompb.ReadRequest_STREAMED_XOR_CHUNKS {
		q.remoteReadStreamed(ctx, w, req)
		return
	}
	q.remoteReadSamples(ctx, w, req)
}

// decodeReadRequest reads and decodes the body of a remote-read request without ever allocating
// more than MaxRemoteReadQuerySize for it: the compressed body is read through http.MaxBytesReader
// (413 beyond maxRemoteReadBodySize), and the decoded length that snappy's header claims is
// checked before the buffer for it is allocated (413 beyond the limit, 400 when unreadable).
func decodeReadRequest(w http.ResponseWriter, r *http.Request) (*prompb.ReadRequest, error) {
	if r.ContentLength > int64(maxRemoteReadBodySize) {
		return nil, bodyTooLarge(r.ContentLength)
	}
	compressed, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(maxRemoteReadBodySize)))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, bodyTooLarge(-1)
		}
		return nil, httpError{fmt.Sprintf("read remote-read request body: %v", err), http.StatusBadRequest}
	}
	return decodeReadRequestBody(compressed)
}

func bodyTooLarge(n int64) error {
	size := "more than " + strconv.Itoa(maxRemoteReadBodySize)
	if n >= 0 {
		size = strconv.FormatInt(n, 10)
	}
	return httpError{fmt.Sprintf("remote-read request body of %s bytes is larger than the limit of %d bytes (snappy-compressed; %d bytes decoded)",
		size, maxRemoteReadBodySize, MaxRemoteReadQuerySize), http.StatusRequestEntityTooLarge}
}

// decodeReadRequestBody decodes a snappy-compressed (block format) ReadRequest, checking the
// decoded length snappy's header announces against MaxRemoteReadQuerySize before allocating.
func decodeReadRequestBody(compressed []byte) (*prompb.ReadRequest, error) {
	n, err := snappy.DecodedLen(compressed)
	if err != nil {
		return nil, httpError{fmt.Sprintf("snappy-decode remote-read request: %v", err), http.StatusBadRequest}
	}
	if n > MaxRemoteReadQuerySize {
		return nil, httpError{fmt.Sprintf("remote-read request decodes to %d bytes, more than the limit of %d bytes", n, MaxRemoteReadQuerySize),
			http.StatusRequestEntityTooLarge}
	}
	raw, err := snappy.Decode(nil, compressed)
	if err != nil {
		return nil, httpError{fmt.Sprintf("snappy-decode remote-read request: %v", err), http.StatusBadRequest}
	}
	var req prompb.ReadRequest
	if err := req.Unmarshal(raw); err != nil {
		return nil, httpError{fmt.Sprintf("unmarshal remote-read request: %v", err), http.StatusBadRequest}
	}
	return &req, nil
}

func negotiateResponseType(accepted []prompb.ReadRequest_ResponseType) (prompb.ReadRequest_ResponseType, error) {
	if len(accepted) == 0 {
		return prompb.ReadRequest_SAMPLES, nil
	}
	for _, t := range accepted {
		if t == prompb.ReadRequest_SAMPLES || t == prompb.ReadRequest_STREAMED_XOR_CHUNKS {
			return t, nil
		}
	}
	return 0, fmt.Errorf("server does not support any of the requested response types: %v; supported: [SAMPLES STREAMED_XOR_CHUNKS]", accepted)
}

func fromLabelMatchers(pms []*prompb.LabelMatcher) ([]*labels.Matcher, error) {
	out := make([]*labels.Matcher, 0, len(pms))
	for _, pm := range pms {
		var t labels.MatchType
		switch pm.Type {
		case prompb.LabelMatcher_EQ:
			t = labels.MatchEqual
		case prompb.LabelMatcher_NEQ:
			t = labels.MatchNotEqual
		case prompb.LabelMatcher_RE:
			t = labels.MatchRegexp
		case prompb.LabelMatcher_NRE:
			t = labels.MatchNotRegexp
		default:
			return nil, fmt.Errorf("invalid matcher type %d on %q", pm.Type, pm.Name)
		}
		m, err := labels.NewMatcher(t, pm.Name, pm.Value)
		if err != nil {
			return nil, fmt.Errorf("matcher %s%s%q: %w", pm.Name, t, pm.Value, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func selectHints(q *prompb.Query) *storage.SelectHints {
	if q.Hints == nil {
		return nil
	}
	return &storage.SelectHints{Start: q.Hints.StartMs, End: q.Hints.EndMs, Step: q.Hints.StepMs,
		Func: q.Hints.Func, Grouping: q.Hints.Grouping, Range: q.Hints.RangeMs, By: q.Hints.By}
}

// remoteReadStatus answers err: its own status for an httpError, 422 for a per-query fetch limit
// (as the query API does; Mimir answers remote read's with 400), 500 otherwise.
func remoteReadStatus(w http.ResponseWriter, err error) {
	var he httpError
	if errors.As(err, &he) {
		http.Error(w, he.msg, he.status)
		return
	}
	if IsLimitError(err) {
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		return
	}
	http.Error(w, err.Error(), http.StatusInternalServerError)
}

func (q *Querier) remoteReadSamples(ctx context.Context, w http.ResponseWriter, req *prompb.ReadRequest) {
	resp := prompb.ReadResponse{Results: make([]*prompb.QueryResult, len(req.Queries))}
	numSamples := 0
	for i, query := range req.Queries {
		res, err := q.readQuery(ctx, query, &numSamples)
		if err != nil {
			remoteReadStatus(w, err)
			return
		}
		resp.Results[i] = res
	}
	raw, err := resp.Marshal()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Header().Set("Content-Encoding", "snappy")
	_, _ = w.Write(snappy.Encode(nil, raw))
}

// readQuery answers one query of a SAMPLES request; numSamples counts across the request's queries
// against Prometheus' sample limit.
func (q *Querier) readQuery(ctx context.Context, query *prompb.Query, numSamples *int) (*prompb.QueryResult, error) {
	ms, err := fromLabelMatchers(query.Matchers)
	if err != nil {
		return nil, httpError{err.Error(), http.StatusBadRequest}
	}
	qr, err := q.queryable.Querier(query.StartTimestampMs, query.EndTimestampMs)
	if err != nil {
		return nil, err
	}
	defer qr.Close()
	ss := qr.Select(ctx, false, selectHints(query), ms...)
	res := &prompb.QueryResult{}
	var it chunkenc.Iterator
	for ss.Next() {
		s := ss.At()
		it = s.Iterator(it)
		ts := &prompb.TimeSeries{Labels: prompb.FromLabels(s.Labels(), nil)}
		for vt := it.Next(); vt != chunkenc.ValNone; vt = it.Next() {
			*numSamples++
			if *numSamples > remoteReadSampleLimit {
				return nil, httpError{fmt.Sprintf("exceeded sample limit (%d)", remoteReadSampleLimit), http.StatusBadRequest}
			}
			switch vt {
			case chunkenc.ValFloat:
				t, v := it.At()
				ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: t, Value: v})
			case chunkenc.ValHistogram:
				t, h := it.AtHistogram(nil)
				ph := prompb.FromIntHistogram(t, h)
				ph.CustomValues = h.CustomValues // prompb's converter leaves them out
				ts.Histograms = append(ts.Histograms, ph)
			case chunkenc.ValFloatHistogram:
				t, h := it.AtFloatHistogram(nil)
				ph := prompb.FromFloatHistogram(t, h)
				ph.CustomValues = h.CustomValues
				ts.Histograms = append(ts.Histograms, ph)
			}
		}
		if err := it.Err(); err != nil {
			return nil, err
		}
		res.Timeseries = append(res.Timeseries, ts)
	}
	return res, ss.Err()
}

// remoteReadStreamed answers with STREAMED_XOR_CHUNKS: frames of one ChunkedReadResponse each, at
// most one series per frame, a series split over frames of about remoteReadMaxBytesInFrame.
func (q *Querier) remoteReadStreamed(ctx context.Context, w http.ResponseWriter, req *prompb.ReadRequest) {
	f, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "internal http.ResponseWriter does not implement http.Flusher interface", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse")
	for i, query := range req.Queries {
		if err := q.streamQuery(ctx, w, f, int64(i), query); err != nil {
			remoteReadStatus(w, err)
			return
		}
	}
}

func (q *Querier) streamQuery(ctx context.Context, w io.Writer, f http.Flusher, idx int64, query *prompb.Query) error {
	ms, err := fromLabelMatchers(query.Matchers)
	if err != nil {
		return httpError{err.Error(), http.StatusBadRequest}
	}
	cq, err := q.queryable.ChunkQuerier(query.StartTimestampMs, query.EndTimestampMs)
	if err != nil {
		return err
	}
	defer cq.Close()
	ss := cq.Select(ctx, true, selectHints(query), ms...)
	var (
		chks []prompb.Chunk
		iter chunks.Iterator
	)
	for ss.Next() {
		series := ss.At()
		iter = series.Iterator(iter)
		lbls := prompb.FromLabels(series.Labels(), nil)
		maxData := remoteReadMaxBytesInFrame
		for _, l := range lbls {
			maxData -= l.Size()
		}
		left := maxData
		for next := iter.Next(); next; {
			chk := iter.At()
			chks = append(chks, prompb.Chunk{MinTimeMs: chk.MinTime, MaxTimeMs: chk.MaxTime,
				Type: prompb.Chunk_Encoding(chk.Chunk.Encoding()), Data: chk.Chunk.Bytes()})
			left -= chks[len(chks)-1].Size()
			if next = iter.Next(); left > 0 && next {
				continue
			}
			resp := &prompb.ChunkedReadResponse{ChunkedSeries: []*prompb.ChunkedSeries{{Labels: lbls, Chunks: chks}}, QueryIndex: idx}
			b, err := resp.Marshal()
			if err != nil {
				return fmt.Errorf("marshal ChunkedReadResponse: %w", err)
			}
			if err := writeFrame(w, b); err != nil {
				return fmt.Errorf("write to stream: %w", err)
			}
			f.Flush()
			chks = chks[:0]
			left = maxData
		}
		if err := iter.Err(); err != nil {
			return err
		}
	}
	return ss.Err()
}

// writeFrame writes one frame of the chunked remote-read stream: uvarint length, CRC32 (Castagnoli,
// big-endian) of the data, the data.
func writeFrame(w io.Writer, b []byte) error {
	var hdr [binary.MaxVarintLen64 + 4]byte
	n := binary.PutUvarint(hdr[:], uint64(len(b)))
	binary.BigEndian.PutUint32(hdr[n:], crc32.Checksum(b, castagnoli))
	if _, err := w.Write(hdr[:n+4]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}
