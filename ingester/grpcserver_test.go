package ingester

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/raftingest/raftingest/ingesterpb"
	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/transferpb"
)

// grpcTestServer is a gRPC server built with the node's own options (grpcServerOptions), serving the
// real ingester service on a store and a Transfer service given by the test.
type grpcTestServer struct {
	addr  string
	reg   *prometheus.Registry
	store *memstore.Store
	logs  *syncBuffer
	conn  *grpc.ClientConn
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// testGRPCConfig is a node configuration from the flags' defaults plus args.
func testGRPCConfig(t *testing.T, args ...string) Config {
	t.Helper()
	var cfg Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	for _, v := range []interface{ Validate() error }{&cfg.GRPCServer, &cfg.Transfer, &cfg.Distributor} {
		if err := v.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	cfg.NodeID = "n1"
	return cfg
}

func startGRPCTestServer(t *testing.T, cfg Config, ing ingesterpb.RawIngesterServer, tr transferpb.TransferServer) *grpcTestServer {
	t.Helper()
	ts := &grpcTestServer{reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	s := &Server{cfg: cfg, log: slog.New(slog.NewTextHandler(ts.logs, nil)), reg: ts.reg}
	opts, err := s.grpcServerOptions()
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	if ing == nil {
		ts.store = openTestStore(t, memstore.DefaultConfig())
		ing = rawIngesterService{&ingesterService{store: ts.store, writable: func() (bool, string) { return true, "" }}}
	}
	ingesterpb.RegisterIngesterServerRaw(srv, ing)
	if tr != nil {
		transferpb.RegisterTransferServer(srv, tr)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	ts.addr = ln.Addr().String()
	ts.conn, err = grpc.NewClient(ts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(math.MaxInt32)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ts.conn.Close() })
	return ts
}

// encodeSeries appends one TimeSeries (labels as name, value pairs, one sample) to a raw
// PushRequest, without the UTF-8 check the generated code would make.
func appendRawSeries(b []byte, ts int64, kv ...string) []byte {
	var s []byte
	for i := 0; i+1 < len(kv); i += 2 {
		var l []byte
		l = protowire.AppendTag(l, 1, protowire.BytesType)
		l = protowire.AppendString(l, kv[i])
		l = protowire.AppendTag(l, 2, protowire.BytesType)
		l = protowire.AppendString(l, kv[i+1])
		s = protowire.AppendTag(s, 1, protowire.BytesType)
		s = protowire.AppendBytes(s, l)
	}
	var smp []byte
	smp = protowire.AppendTag(smp, 1, protowire.Fixed64Type)
	smp = protowire.AppendFixed64(smp, math.Float64bits(1))
	smp = protowire.AppendTag(smp, 2, protowire.VarintType)
	smp = protowire.AppendVarint(smp, uint64(ts))
	s = protowire.AppendTag(s, 2, protowire.BytesType)
	s = protowire.AppendBytes(s, smp)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendBytes(b, s)
}

func pushRawBytes(ctx context.Context, conn *grpc.ClientConn, tenant string, b []byte) (*ingesterpb.PushResponse, error) {
	return ingesterpb.PushRaw(ingesterpb.WithTenant(ctx, tenant), conn, &ingesterpb.RawPushRequest{Data: &b})
}

func queryNames(ctx context.Context, conn *grpc.ClientConn, tenant, nameRE string) (int, error) {
	st, err := ingesterpb.NewIngesterClient(conn).QueryStream(ingesterpb.WithTenant(ctx, tenant), &ingesterpb.QueryRequest{
		StartTimestampMs: math.MinInt64, EndTimestampMs: math.MaxInt64,
		Matchers: []*ingesterpb.LabelMatcher{{Type: ingesterpb.MatchType_REGEX_MATCH, Name: "__name__", Value: nameRE}}})
	if err != nil {
		return 0, err
	}
	n := 0
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n += len(resp.GetSeries())
	}
}

// TestGRPC_PushValidatesLabels: a series whose label value is not UTF-8, pushed over gRPC, is
// refused (INVALID) and the rest of the request stored. Before, it was stored, and every
// QueryStream selecting it failed (a proto3 string must be UTF-8), on every replica, after every
// restart. Unsorted and repeated label names, invalid names and a missing metric name are refused
// the same way.
func TestGRPC_PushValidatesLabels(t *testing.T) {
	ts := startGRPCTestServer(t, testGRPCConfig(t), nil, nil)
	ctx := t.Context()
	var b []byte
	b = appendRawSeries(b, 1000, "__name__", "bad_utf8", "job", "\xff\xfe")
	b = appendRawSeries(b, 1000, "__name__", "good", "job", "x")
	b = appendRawSeries(b, 1000, "job", "x", "__name__", "unsorted")
	b = appendRawSeries(b, 1000, "__name__", "dup", "a", "1", "a", "2")
	b = appendRawSeries(b, 1000, "__name__", "badname", "a-b", "1")
	b = appendRawSeries(b, 1000, "job", "noname")
	b = appendRawSeries(b, 1000, "__name__", "1digit")
	b = appendRawSeries(b, 1000, "__name__", "good2")
	resp, err := pushRawBytes(ctx, ts.conn, "t", b)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32]string{0: "UTF-8", 2: "not sorted", 3: "more than once", 4: "invalid label name", 5: "no metric name", 6: "invalid metric name"}
	if len(resp.GetErrors()) != len(want) {
		t.Fatalf("errors %v, want %d", resp.GetErrors(), len(want))
	}
	for i, e := range resp.GetErrors() {
		if w, ok := want[e.GetIndex()]; !ok || e.GetCode() != ingesterpb.ErrorCode_INVALID || !strings.Contains(e.GetMessage(), w) {
			t.Errorf("error %d: %v, want INVALID containing %q", i, e, w)
		}
		if i > 0 && e.GetIndex() <= resp.GetErrors()[i-1].GetIndex() {
			t.Errorf("errors not in index order: %v", resp.GetErrors())
		}
	}
	if resp.GetSamplesIngested() != 2 {
		t.Fatalf("%d samples ingested, want the 2 of the good series", resp.GetSamplesIngested())
	}
	n, err := queryNames(ctx, ts.conn, "t", ".+")
	if err != nil || n != 2 {
		t.Fatalf("QueryStream of every series: %d series, %v; want the 2 good ones and no error", n, err)
	}
}

// TestGRPC_TenantIsValidated: the tenant of Push and QueryStream follows X-Scope-OrgID's rules.
// Before, a tenant "../../outside" pushed over gRPC was stored and flushed outside the bucket.
func TestGRPC_TenantIsValidated(t *testing.T) {
	ts := startGRPCTestServer(t, testGRPCConfig(t), nil, nil)
	ctx := t.Context()
	b := appendRawSeries(nil, 1000, "__name__", "m")
	for _, tenant := range []string{"../../outside", "..", "a/b", `a\b`, "a b", strings.Repeat("t", 151)} {
		_, err := pushRawBytes(ctx, ts.conn, tenant, b)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "tenant id") {
			t.Errorf("Push as %q: %v, want InvalidArgument about the tenant id", tenant, err)
		}
		if _, err := queryNames(ctx, ts.conn, tenant, ".+"); status.Code(err) != codes.InvalidArgument {
			t.Errorf("QueryStream as %q: %v, want InvalidArgument", tenant, err)
		}
	}
	if got := ts.store.Tenants(); len(got) != 0 {
		t.Fatalf("the store holds tenants %q", got)
	}
	if _, err := pushRawBytes(ctx, ts.conn, "team-a", b); err != nil {
		t.Fatalf("a valid tenant: %v", err)
	}
}

// transferSink is a Transfer service that reads every frame and answers with their count.
type transferSink struct {
	transferpb.UnimplementedTransferServer
	panicOn string // a frame from this leaver makes it panic
}

func (s *transferSink) TransferChunks(st transferpb.Transfer_TransferChunksServer) error {
	n := uint64(0)
	for {
		f, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return st.SendAndClose(&transferpb.TransferResult{Series: n})
		}
		if err != nil {
			return err
		}
		if s.panicOn != "" && f.GetLeaver() == s.panicOn {
			panic("transferSink: told to panic")
		}
		n++
	}
}

func sendFrames(ctx context.Context, conn *grpc.ClientConn, leaver string, payloads ...int) (*transferpb.TransferResult, error) {
	st, err := transferpb.NewTransferClient(conn).TransferChunks(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range payloads {
		if err := st.Send(&transferpb.Frame{Leaver: leaver, Payload: make([]byte, n)}); err != nil {
			break // the status comes from CloseAndRecv
		}
	}
	return st.CloseAndRecv()
}

// TestGRPC_PerMethodReceiveLimits: gRPC has one receive limit per server; each method is held to its
// own. Hand-over frames may be large (-ingester.transfer-max-recv-msg-size), a Push only as large
// as a remote-write request (-distributor.max-recv-msg-size), the Ring service's and QueryStream's
// requests 4 MiB. The server-wide limit is the largest, refused by gRPC itself.
func TestGRPC_PerMethodReceiveLimits(t *testing.T) {
	cfg := testGRPCConfig(t, "-distributor.max-recv-msg-size", "65536",
		"-ingester.transfer-frame-bytes", "1048576", "-ingester.transfer-max-recv-msg-size", "8388608")
	ts := startGRPCTestServer(t, cfg, nil, &transferSink{})
	ctx := t.Context()
	pushOf := func(size int) []byte {
		var b []byte
		for i := 0; len(b) < size; i++ {
			b = appendRawSeries(b, int64(i), "__name__", "m", "i", strings.Repeat("x", 100)+string(rune('a'+i%26)))
		}
		return b
	}
	check := func(what string, err error, want codes.Code, text string) {
		t.Helper()
		if status.Code(err) != want || (err != nil && !strings.Contains(err.Error(), text)) {
			t.Errorf("%s: %v, want %s containing %q", what, err, want, text)
		}
	}
	_, err := pushRawBytes(ctx, ts.conn, "t", pushOf(60<<10))
	check("Push of 60 KiB", err, codes.OK, "")
	_, err = pushRawBytes(ctx, ts.conn, "t", pushOf(100<<10))
	check("Push of 100 KiB", err, codes.ResourceExhausted, "-distributor.max-recv-msg-size")

	_, err = queryNames(ctx, ts.conn, "t", strings.Repeat("a", 3<<20))
	check("QueryStream request of 3 MiB", err, codes.OK, "")
	_, err = queryNames(ctx, ts.conn, "t", strings.Repeat("a", 5<<20))
	check("QueryStream request of 5 MiB", err, codes.ResourceExhausted, "larger than the limit")

	res, err := sendFrames(ctx, ts.conn, "l", 1<<20, 7<<20)
	check("frames of 1 and 7 MiB", err, codes.OK, "")
	if res.GetSeries() != 2 {
		t.Errorf("%d frames arrived, want 2", res.GetSeries())
	}
	_, err = sendFrames(ctx, ts.conn, "l", 1<<10, 9<<20)
	check("a frame of 9 MiB", err, codes.ResourceExhausted, "larger than max")

	// A Push above the server-wide limit is refused by gRPC before it allocates for it.
	_, err = pushRawBytes(ctx, ts.conn, "t", pushOf(9<<20))
	check("Push of 9 MiB", err, codes.ResourceExhausted, "larger than max")
}

// panicky is an ingester whose Push and QueryStream panic.
type panicky struct {
	ingesterpb.UnimplementedIngesterServer
}

func (panicky) PushRaw(_ context.Context, req []byte) (*ingesterpb.PushResponse, error) {
	n := int(req[len(req)-1]) + len(req) // an index out of range: a runtime panic, as a bug would cause
	return &ingesterpb.PushResponse{SamplesIngested: uint64(req[n])}, nil
}

func (panicky) QueryStream(*ingesterpb.QueryRequest, ingesterpb.Ingester_QueryStreamServer) error {
	panic(errors.New("panicky: QueryStream"))
}

// TestGRPC_PanicRecovery: a panic in a handler, unary or streaming, fails the call with Internal
// (the panic's value stays in the log, with the stack) and is counted; the server goes on serving.
func TestGRPC_PanicRecovery(t *testing.T) {
	ts := startGRPCTestServer(t, testGRPCConfig(t), panicky{}, &transferSink{panicOn: "boom"})
	ctx := t.Context()
	_, err := pushRawBytes(ctx, ts.conn, "t", appendRawSeries(nil, 1, "__name__", "m"))
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "out of range") {
		t.Fatalf("Push: %v, want Internal without the panic's value", err)
	}
	if _, err := queryNames(ctx, ts.conn, "t", ".+"); status.Code(err) != codes.Internal {
		t.Fatalf("QueryStream: %v, want Internal", err)
	}
	if _, err := sendFrames(ctx, ts.conn, "boom", 10); status.Code(err) != codes.Internal {
		t.Fatalf("TransferChunks: %v, want Internal", err)
	}
	if _, err := sendFrames(ctx, ts.conn, "fine", 10); err != nil {
		t.Fatalf("the server after three panics: %v", err)
	}
	for _, m := range []string{ingesterpb.Ingester_Push_FullMethodName, ingesterpb.Ingester_QueryStream_FullMethodName,
		transferpb.Transfer_TransferChunks_FullMethodName} {
		if got := counterValue(t, ts.reg, "raftingest_grpc_server_panics_total", "method", m); got != 1 {
			t.Errorf("raftingest_grpc_server_panics_total{method=%q} = %v, want 1", m, got)
		}
	}
	logs := ts.logs.String()
	for _, w := range []string{"panic in a gRPC handler", "index out of range", "panicky: QueryStream", "goroutine ", "grpcserver_test.go"} {
		if !strings.Contains(logs, w) {
			t.Errorf("the log does not mention %q:\n%s", w, logs)
		}
	}
}

// counterValue is the value of counter name{label="value"} in reg (0 when absent).
func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestGRPC_KeepaliveAndStreamCap: the server advertises -server.grpc-max-concurrent-streams in its
// HTTP/2 SETTINGS, and disconnects a client that pings more often than
// -server.grpc.keepalive.min-time-between-pings (GOAWAY ENHANCE_YOUR_CALM "too_many_pings").
func TestGRPC_KeepaliveAndStreamCap(t *testing.T) {
	ts := startGRPCTestServer(t, testGRPCConfig(t, "-server.grpc-max-concurrent-streams", "7"), nil, nil)
	c, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	streams, gotSettings := uint32(0), false
	for !gotSettings {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			gotSettings = true
			if v, ok := sf.Value(http2.SettingMaxConcurrentStreams); ok {
				streams = v
			}
			if err := fr.WriteSettingsAck(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if streams != 7 {
		t.Fatalf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want 7", streams)
	}
	for i := range 5 {
		if err := fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			break // the server may close before the last ones
		}
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY before the connection ended: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm || !strings.Contains(string(ga.DebugData()), "too_many_pings") {
				t.Fatalf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", ga.ErrCode, ga.DebugData())
			}
			return
		}
	}
}

// TestGRPCServerConfig_Validate: each bad value is refused naming its flag, never clamped.
func TestGRPCServerConfig_Validate(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"-server.grpc-max-concurrent-streams", "0"}, "-server.grpc-max-concurrent-streams"},
		{[]string{"-server.grpc-max-concurrent-streams", "4294967296"}, "-server.grpc-max-concurrent-streams"},
		{[]string{"-server.grpc.keepalive.time", "0s"}, "-server.grpc.keepalive.time"},
		{[]string{"-server.grpc.keepalive.timeout", "-1s"}, "-server.grpc.keepalive.timeout"},
		{[]string{"-server.grpc.keepalive.max-connection-idle", "-1s"}, "-server.grpc.keepalive.max-connection-idle"},
		{[]string{"-server.grpc.keepalive.time", "5s"}, "-server.grpc.keepalive.min-time-between-pings"},
	} {
		var cfg Config
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		cfg.RegisterFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if err := cfg.GRPCServer.Validate(); err == nil || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("%v: %v, want an error naming %s", tc.args, err, tc.flag)
		}
	}
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.ContinueOnError))
	if err := cfg.GRPCServer.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}
