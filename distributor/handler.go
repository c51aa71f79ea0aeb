package distributor

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// TenantHeader is the HTTP header carrying the tenant (Cortex's and Mimir's).
const TenantHeader = "X-Scope-OrgID"

// ServeHTTP handles POST /api/v1/push: a Prometheus remote-write 1.0 request (a snappy-compressed
// prompb.WriteRequest) or, by its Content-Type, a remote-write 2.0 one (ContentTypeV2; see
// decodev2.go). A 2.0 response carries the X-Prometheus-Remote-Write-Samples-Written,
// -Histograms-Written and -Exemplars-Written headers, whatever its status once the request is
// known to be 2.0 (not on a 405, 401 or a refused tenant, found before the Content-Type is read).
// The status codes are what remote-write senders act on:
//
//	200  every series stored by a quorum of its replicas
//	400  bad input: a refused series (the message names it and the reason), a malformed body;
//	     Prometheus drops the batch and does not retry. The valid series of the request are stored.
//	401  multi-tenancy is on and X-Scope-OrgID is missing
//	405  not a POST
//	408  the body did not arrive within -server.http-read-timeout
//	413  body larger than -distributor.max-recv-msg-size (compressed or decompressed), more series
//	     than -distributor.max-series-per-request, or series, labels and samples so near-empty that
//	     decoding them would take more than DefaultMaxExpansion times the decompressed body
//	415  a Content-Encoding other than snappy, or a Content-Type other than remote-write 1.0's or 2.0's
//	429  the tenant's ingestion rate limit; nothing of the request was stored
//	500  a series could not reach a quorum (ingesters down, too few healthy ingesters); retried
//	503  the ring is not known yet or no member owns tokens, or an instance limit
//	     (-distributor.instance-limits.*) was reached; retried
func (d *Distributor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	code := d.serve(w, r)
	d.m.pushDuration.WithLabelValues(strconv.Itoa(code)).Observe(time.Since(start).Seconds())
}

func (d *Distributor) serve(w http.ResponseWriter, r *http.Request) int {
	v2 := false
	fail := func(code int, msg string) int {
		if v2 {
			writtenHeaders(w.Header(), 0, 0, 0)
		}
		http.Error(w, msg, code)
		return code
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return fail(http.StatusMethodNotAllowed, "remote-write pushes must be POST requests")
	}

	tenant := DefaultTenant
	if d.cfg.MultitenancyEnabled {
		tenant = r.Header.Get(TenantHeader)
		if tenant == "" {
			return fail(http.StatusUnauthorized, "no org id: multi-tenancy is enabled and the request has no "+TenantHeader+" header")
		}
		if err := ValidateTenantID(tenant); err != nil {
			return fail(http.StatusBadRequest, "invalid "+TenantHeader+" header: "+err.Error())
		}
	}

	// Remote-write 1.0 and 2.0: Content-Encoding: snappy (block format) and Content-Type:
	// application/x-protobuf, with proto=io.prometheus.write.v2.Request for 2.0 (absent or
	// prometheus.WriteRequest: 1.0). Every known sender sets both; a missing Content-Encoding is
	// tolerated (the body must still be snappy), any other encoding is refused rather than misread.
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "snappy") {
		return fail(http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported Content-Encoding %q: remote-write bodies must be snappy-compressed (Content-Encoding: snappy)", ce))
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/x-protobuf" {
			return fail(http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported Content-Type %q: want application/x-protobuf (Prometheus remote-write 1.0), or %s (2.0)", ct, ContentTypeV2))
		}
		switch p, ok := params["proto"]; {
		case !ok || p == "prometheus.WriteRequest":
		case p == "io.prometheus.write.v2.Request":
			v2 = true
		default:
			return fail(http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported remote-write message %q: want prometheus.WriteRequest (remote-write 1.0) or io.prometheus.write.v2.Request (2.0)", p))
		}
	}
	if v2 {
		d.m.requestsByVersion.WithLabelValues("2.0").Inc()
	} else {
		d.m.requestsByVersion.WithLabelValues("1.0").Inc()
	}

	max := d.cfg.MaxRecvMsgSize
	if r.ContentLength > int64(max) {
		return fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes exceeds the limit of %d bytes (-distributor.max-recv-msg-size)", r.ContentLength, max))
	}

	// The instance limits: from here the request counts as in flight, and every buffer it holds is
	// reserved before it is allocated.
	if err := d.startRequest(); err != nil {
		return fail(http.StatusServiceUnavailable, err.Error())
	}
	defer d.finishRequest()
	res := &reservation{d: d}
	defer res.release()

	compressed, err := readBody(http.MaxBytesReader(w, r.Body, int64(max)), r.ContentLength, res)
	if err != nil {
		var tooBig *http.MaxBytesError
		var netErr net.Error
		switch {
		case errors.As(err, &tooBig):
			return fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds the limit of %d bytes (-distributor.max-recv-msg-size)", max))
		case errors.Is(err, errMaxInflightBytes):
			return fail(http.StatusServiceUnavailable, err.Error())
		case errors.As(err, &netErr) && netErr.Timeout():
			return fail(http.StatusRequestTimeout, "reading the request body timed out (-server.http-read-timeout): "+err.Error())
		}
		return fail(http.StatusBadRequest, "reading the request body: "+err.Error())
	}
	if len(*compressed) == 0 {
		bufPool.Put(compressed)
		return fail(http.StatusBadRequest, "empty request body: want a snappy-compressed remote-write WriteRequest")
	}
	n, err := SnappyDecodedLen(*compressed, max)
	if err == nil {
		err = res.add(n)
	}
	var body *[]byte
	if err == nil {
		body, err = DecompressSnappy(*compressed, max)
	}
	bufPool.Put(compressed)
	if err != nil {
		switch {
		case errors.Is(err, ErrTooLarge):
			return fail(http.StatusRequestEntityTooLarge, err.Error())
		case errors.Is(err, errMaxInflightBytes):
			return fail(http.StatusServiceUnavailable, err.Error())
		}
		return fail(http.StatusBadRequest, err.Error())
	}
	// From here on the labels alias body: it goes back to the pool only after the push returned and
	// st was reset (every message that names a series was rendered into a fresh string by then).
	st := d.states.Get().(*pushState)
	defer func() {
		d.release(st)
		if cap(*body) > 0 {
			bufPool.Put(body)
		}
	}()
	if v2 {
		err = st.req.UnmarshalV2Limited(*body, DecodeLimits{MaxSeries: d.cfg.MaxSeriesPerRequest, MaxExpansion: DefaultMaxExpansionV2,
			MaxRewrittenBytes: d.cfg.MaxRecvMsgSize})
	} else {
		err = st.req.UnmarshalLimited(*body, DecodeLimits{MaxSeries: d.cfg.MaxSeriesPerRequest, MaxExpansion: DefaultMaxExpansion})
	}
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			return fail(http.StatusRequestEntityTooLarge, err.Error())
		}
		return fail(http.StatusBadRequest, err.Error())
	}
	// The decoded series and the copies of the body forwarded to the replicas (at most one per
	// replica: each series goes to RF ingesters); for 2.0, of its series re-encoded as 1.0.
	forwarded := len(*body)
	if v2 {
		forwarded = st.req.RewrittenBytes()
	}
	if err := res.add(st.req.DecodedBytes() + d.cfg.ReplicationFactor*forwarded); err != nil {
		return fail(http.StatusServiceUnavailable, err.Error())
	}
	perr := d.push(r.Context(), tenant, &st.req, st)
	if v2 {
		writtenHeaders(w.Header(), st.req.written(), st.req.writtenHistograms(), st.req.writtenExemplars())
		v2 = false // fail must not overwrite them
	}
	if perr != nil {
		if perr.Status >= 500 {
			d.log.Warn("push failed", "tenant", tenant, "status", perr.Status, "err", perr.Msg)
		}
		return fail(perr.Status, perr.Msg)
	}
	w.WriteHeader(http.StatusOK)
	return http.StatusOK
}

// The response headers of remote-write 2.0, which tell the sender what was written. Prometheus
// counts them, and takes a 2xx whose headers say that nothing of a non-empty request was written for
// a receiver that only speaks 1.0 (a failure, retried).
const (
	HeaderSamplesWritten    = "X-Prometheus-Remote-Write-Samples-Written"
	HeaderHistogramsWritten = "X-Prometheus-Remote-Write-Histograms-Written"
	HeaderExemplarsWritten  = "X-Prometheus-Remote-Write-Exemplars-Written"
)

// writtenHeaders sets the 2.0 response headers: samples float samples, histograms native
// histogram samples and exemplars exemplars written (those of the series a quorum stored;
// exemplars only for a tenant that stores them).
func writtenHeaders(h http.Header, samples, histograms, exemplars int) {
	h.Set(HeaderSamplesWritten, strconv.Itoa(samples))
	h.Set(HeaderHistogramsWritten, strconv.Itoa(histograms))
	h.Set(HeaderExemplarsWritten, strconv.Itoa(exemplars))
}

// written is the number of samples of r that a quorum of their replicas stored: those of the series
// push left done (a series refused or failed, or a request refused as a whole, wrote nothing).
func (r *WriteRequest) written() int {
	n := 0
	for i := range r.Series {
		if s := &r.Series[i]; s.state == seriesDone {
			n += len(s.Samples)
		}
	}
	return n
}

// firstBodyBuffer is the size of the first buffer a body is read into when the client announced a
// larger Content-Length: an ordinary push (tens of KB compressed) fits, and a client announcing 100
// MiB then sending nothing costs this much, not what it announced.
const firstBodyBuffer = 256 << 10

// readBody reads all of r into a buffer from the pool, allocated as bytes arrive: it starts at
// firstBodyBuffer (or the Content-Length when smaller) and doubles when full, never past the
// Content-Length, each buffer reserved in res before it is taken. The caller puts the buffer back.
func readBody(r io.Reader, contentLength int64, res *reservation) (*[]byte, error) {
	size := firstBodyBuffer
	switch {
	case contentLength == 0: // no body announced: read just enough to find out
		size = 1 << minPoolExp
	case contentLength > 0 && contentLength < int64(size):
		size = int(contentLength)
	}
	if err := res.add(size); err != nil {
		return nil, err
	}
	buf := bufPool.Get(size)
	n := 0
	for {
		if n == len(*buf) {
			if contentLength >= 0 && int64(n) >= contentLength {
				// Everything announced has arrived; the server's body reader ends there.
				*buf = (*buf)[:n]
				return buf, nil
			}
			next := 2 * len(*buf)
			if contentLength > 0 && int64(next) > contentLength {
				next = int(contentLength)
			}
			if err := res.add(next); err != nil {
				bufPool.Put(buf)
				return nil, err
			}
			bigger := bufPool.Get(next)
			copy(*bigger, (*buf)[:n])
			old := len(*buf)
			bufPool.Put(buf)
			_ = res.add(-old)
			buf = bigger
		}
		m, err := r.Read((*buf)[n:])
		n += m
		if err == io.EOF {
			if contentLength > 0 && int64(n) < contentLength {
				bufPool.Put(buf)
				return nil, fmt.Errorf("body shorter than its Content-Length of %d bytes", contentLength)
			}
			*buf = (*buf)[:n]
			return buf, nil
		}
		if err != nil {
			bufPool.Put(buf)
			if errors.Is(err, io.ErrUnexpectedEOF) && contentLength > 0 {
				return nil, fmt.Errorf("body shorter than its Content-Length of %d bytes", contentLength)
			}
			return nil, err
		}
	}
}
