package distributor

import (
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"

	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/prompb"
	otlptranslator "github.com/prometheus/prometheus/storage/remote/otlptranslator/prometheusremotewrite"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// OTLP/HTTP metrics (POST /otlp/v1/metrics): an ExportMetricsServiceRequest, protobuf or JSON,
// plain or gzip, translated to Prometheus series by the Prometheus project's own OTLP translator
// (the package Prometheus 3's and Mimir's OTLP endpoints use), with the same metric and label
// names, then pushed exactly as a remote-write request is: the same validation, limits, placement
// and quorum, and the same answers (status codes) in OTLP's form — a google.rpc.Status body for
// an error, an empty ExportMetricsServiceResponse for a success.
//
// Exponential histograms become native histograms (the translator's), validated and stored as a
// remote-write native histogram is (decode_hist.go). OTLP exemplars are dropped.

// OTelConfig is the OTLP translation's configuration (Prometheus's otlp: block, Mimir's names).
type OTelConfig struct {
	// MetricSuffixes adds the unit and type suffixes (_seconds, _total, ...) to metric names, as
	// Prometheus's default translation strategy does (UnderscoreEscapingWithSuffixes).
	MetricSuffixes bool
	// PromoteResourceAttributes are the resource attributes copied onto every series as labels.
	PromoteResourceAttributes string
	// KeepIdentifyingResourceAttributes keeps service.name, service.namespace and
	// service.instance.id on target_info (they always make job and instance).
	KeepIdentifyingResourceAttributes bool
}

// RegisterFlags registers the -otel.* flags on f.
func (c *OTelConfig) RegisterFlags(f *flag.FlagSet) {
	f.BoolVar(&c.MetricSuffixes, "otel.metric-suffixes-enabled", true, "Add unit and type suffixes to the names of metrics received over OTLP (http.server.duration in seconds becomes http_server_duration_seconds, a counter gets _total), as Prometheus 3 does by default.")
	f.StringVar(&c.PromoteResourceAttributes, "otel.promote-resource-attributes", "", "Comma-separated OTLP resource attributes copied onto every series of the resource as labels (dots become underscores), as Prometheus's otlp.promote_resource_attributes. The others are on the target_info series only.")
	f.BoolVar(&c.KeepIdentifyingResourceAttributes, "otel.keep-identifying-resource-attributes", false, "Keep service.name, service.namespace and service.instance.id as labels of target_info too (they always make the job and instance labels).")
}

// promoted returns the attribute list of PromoteResourceAttributes.
func (c *OTelConfig) promoted() []string {
	var out []string
	for _, a := range strings.Split(c.PromoteResourceAttributes, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// validate checks the -otel.* values.
func (c *OTelConfig) validate() error {
	for _, a := range c.promoted() {
		if strings.ContainsAny(a, " \t\n") {
			return fmt.Errorf("-otel.promote-resource-attributes: attribute %q has white space in it", a)
		}
	}
	return nil
}

// The OTLP/HTTP content types.
const (
	otlpProtobuf = "application/x-protobuf"
	otlpJSON     = "application/json"
)

// OTLPHandler returns the handler of POST /otlp/v1/metrics.
func (d *Distributor) OTLPHandler() http.Handler { return http.HandlerFunc(d.serveOTLP) }

func (d *Distributor) serveOTLP(w http.ResponseWriter, r *http.Request) {
	json := false
	// fail answers with a google.rpc.Status in the request's encoding, as OTLP/HTTP wants.
	fail := func(code int, msg string) {
		st := &spb.Status{Code: int32(grpcCodeOf(code)), Message: msg}
		var body []byte
		if json {
			body, _ = protojson.Marshal(st)
			w.Header().Set("Content-Type", otlpJSON)
		} else {
			body, _ = proto.Marshal(st)
			w.Header().Set("Content-Type", otlpProtobuf)
		}
		w.WriteHeader(code)
		_, _ = w.Write(body)
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		fail(http.StatusMethodNotAllowed, "OTLP exports must be POST requests")
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case err == nil && mt == otlpProtobuf:
	case err == nil && mt == otlpJSON:
		json = true
	default:
		fail(http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported Content-Type %q: want %s or %s (OTLP/HTTP)", r.Header.Get("Content-Type"), otlpProtobuf, otlpJSON))
		return
	}
	gzipped := false
	switch ce := r.Header.Get("Content-Encoding"); {
	case ce == "" || strings.EqualFold(ce, "identity"):
	case strings.EqualFold(ce, "gzip"):
		gzipped = true
	default:
		fail(http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported Content-Encoding %q: want gzip or none", ce))
		return
	}
	tenant := DefaultTenant
	if d.cfg.MultitenancyEnabled {
		if tenant = r.Header.Get(TenantHeader); tenant == "" {
			fail(http.StatusUnauthorized, "no org id: multi-tenancy is enabled and the request has no "+TenantHeader+" header")
			return
		}
		if err := ValidateTenantID(tenant); err != nil {
			fail(http.StatusBadRequest, "invalid "+TenantHeader+" header: "+err.Error())
			return
		}
	}
	d.m.requestsByVersion.WithLabelValues("otlp").Inc()
	max := d.cfg.MaxRecvMsgSize
	if r.ContentLength > int64(max) {
		fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body of %d bytes exceeds the limit of %d bytes (-distributor.max-recv-msg-size)", r.ContentLength, max))
		return
	}
	if err := d.startRequest(); err != nil {
		fail(http.StatusServiceUnavailable, err.Error())
		return
	}
	defer d.finishRequest()
	res := &reservation{d: d}
	defer res.release()

	body, code, err := readOTLPBody(w, r, max, gzipped, res)
	if err != nil {
		fail(code, err.Error())
		return
	}
	// pdata's decoded form and the translation's series take several times the encoded size; they
	// are reserved before decoding, so the instance's in-flight bytes bound them too.
	if err := res.add(otlpExpansion * len(body)); err != nil {
		fail(http.StatusServiceUnavailable, err.Error())
		return
	}
	req := pmetricotlp.NewExportRequest()
	if json {
		err = req.UnmarshalJSON(body) // its decoder limits nesting itself
	} else if err = checkOTLPNesting(body); err == nil {
		err = req.UnmarshalProto(body)
	}
	if err != nil {
		fail(http.StatusBadRequest, "decoding the OTLP ExportMetricsServiceRequest: "+err.Error())
		return
	}
	// The translation's output, bounded before it is made: as many series as a remote-write
	// request may have, as many bytes as its decompressed body may have, and reserved with the
	// copies sent to the replicas.
	// The series count is not held to -distributor.max-series-per-request: an ordinary Collector
	// batch (8192 histogram points of 11 bounds) makes over 100k series, and OTLP clients drop a
	// 413 for good. The bytes bound the memory.
	_, nBytes := otlpEstimate(req.Metrics(), d.cfg.OTel.promoted())
	if nBytes > d.cfg.MaxRecvMsgSize {
		fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("%v: about %d bytes of series, more than the %d of -distributor.max-recv-msg-size (each data point's attributes are repeated on every series it makes: a histogram on every bucket)", errTranslatedTooLarge, nBytes, d.cfg.MaxRecvMsgSize))
		return
	}
	if err := res.add((1 + d.cfg.ReplicationFactor) * nBytes); err != nil {
		fail(http.StatusServiceUnavailable, err.Error())
		return
	}
	conv := otlptranslator.NewPrometheusConverter()
	_, terr := conv.FromMetrics(r.Context(), req.Metrics(), otlptranslator.Settings{
		AddMetricSuffixes:                 d.cfg.OTel.MetricSuffixes,
		PromoteResourceAttributes:         otlptranslator.NewPromoteResourceAttributes(config.OTLPConfig{PromoteResourceAttributes: d.cfg.OTel.promoted()}),
		KeepIdentifyingResourceAttributes: d.cfg.OTel.KeepIdentifyingResourceAttributes,
	})
	// The translated series go through the remote-write decoder, so that an OTLP push is validated,
	// limited and routed by exactly the code a remote-write push is.
	raw, err := (&prompb.WriteRequest{Timeseries: conv.TimeSeries()}).Marshal()
	if err != nil {
		fail(http.StatusInternalServerError, "encoding the translated series: "+err.Error())
		return
	}
	st := d.states.Get().(*pushState)
	defer d.release(st)
	if err := st.req.UnmarshalLimited(raw, DecodeLimits{}); err != nil { // bounded by nBytes above
		if errors.Is(err, ErrTooLarge) {
			fail(http.StatusRequestEntityTooLarge, err.Error())
			return
		}
		fail(http.StatusInternalServerError, "decoding the translated series: "+err.Error())
		return
	}
	perr := d.push(r.Context(), tenant, &st.req, st)
	switch {
	case perr != nil && terr != nil && perr.Status < 500:
		fail(perr.Status, perr.Msg+"; and some data points could not be translated: "+terr.Error())
	case perr != nil && perr.Status >= 500:
		// OTLP clients retry 429, 502, 503 and 504 only (the OTel SDKs and Collector): a 500 would
		// drop the batch for good in exactly the failures replication rides out (a quorum lost for
		// a moment). Every server-side failure is answered 503, which they retry.
		d.log.Warn("OTLP push failed", "tenant", tenant, "status", perr.Status, "err", perr.Msg)
		w.Header().Set("Retry-After", "1")
		fail(http.StatusServiceUnavailable, perr.Msg)
	case perr != nil && perr.Status < 300:
		// 202: the HA tracker dropped a non-elected replica's samples on purpose. An OTLP 2xx body
		// must be an ExportMetricsServiceResponse (a Status there made the Collector's decoder fail
		// and retry): answer the empty success.
		writeOTLPSuccess(w, json)
	case perr != nil:
		fail(perr.Status, perr.Msg)
	case terr != nil:
		// Everything translated was stored; what could not be translated is refused as bad input.
		fail(http.StatusBadRequest, "some data points could not be translated to Prometheus series (the others were stored): "+terr.Error())
	default:
		writeOTLPSuccess(w, json)
	}
}

// writeOTLPSuccess answers 200 with an empty ExportMetricsServiceResponse in the request's encoding.
func writeOTLPSuccess(w http.ResponseWriter, json bool) {
	if json {
		w.Header().Set("Content-Type", otlpJSON)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("{}"))
		return
	}
	w.Header().Set("Content-Type", otlpProtobuf)
	w.WriteHeader(http.StatusOK) // an empty ExportMetricsServiceResponse is zero bytes
}

// otlpExpansion is the memory reserved for decoding and translating an OTLP request, per byte of
// its decompressed body.
const otlpExpansion = 8

// readOTLPBody reads the body (gunzipping it when gzipped) into a fresh buffer of at most max bytes,
// reserved in res as it grows. On error it returns the status to answer.
func readOTLPBody(w http.ResponseWriter, r *http.Request, limit int, gzipped bool, res *reservation) ([]byte, int, error) {
	var in io.Reader = http.MaxBytesReader(w, r.Body, int64(limit))
	if gzipped {
		zr, err := gzip.NewReader(in)
		if err != nil {
			return nil, readErrorStatus(err), fmt.Errorf("reading the gzip body: %w", err)
		}
		defer zr.Close()
		in = zr
	}
	var buf []byte
	for {
		if len(buf) == cap(buf) {
			next := min(max(2*cap(buf), 32<<10), limit+1) // one byte over the limit tells it is over
			if err := res.add(next - cap(buf)); err != nil {
				return nil, http.StatusServiceUnavailable, err
			}
			buf = append(make([]byte, 0, next), buf...)
		}
		n, err := in.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > limit {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body exceeds the limit of %d bytes, decompressed (-distributor.max-recv-msg-size)", limit)
		}
		if errors.Is(err, io.EOF) {
			return buf, 0, nil
		}
		if err != nil {
			return nil, readErrorStatus(err), fmt.Errorf("reading the request body: %w", err)
		}
	}
}

// readErrorStatus is the status answering a failed body read.
func readErrorStatus(err error) int {
	var tooBig *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errMaxInflightBytes):
		return http.StatusServiceUnavailable
	case errors.As(err, &netErr) && netErr.Timeout():
		return http.StatusRequestTimeout
	}
	return http.StatusBadRequest
}

// grpcCodeOf maps an HTTP status to the code of OTLP's error body (the mapping grpc-gateway uses,
// which OTLP/HTTP follows).
func grpcCodeOf(status int) codes.Code {
	switch status {
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusRequestEntityTooLarge:
		return codes.OutOfRange
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	case http.StatusRequestTimeout:
		return codes.DeadlineExceeded
	case http.StatusUnsupportedMediaType, http.StatusMethodNotAllowed:
		return codes.Unimplemented
	}
	return codes.Internal
}
