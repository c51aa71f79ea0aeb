package ingester

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/raftingest/raftingest/distributor"
	"github.com/raftingest/raftingest/ingesterpb"
)

// pushWorkload is the ingest scenario's request shape: series with 10 labels, one sample each,
// spread over groups so that the store holds groups×series series; round r writes group r%groups.
type pushWorkload struct {
	series, groups int
	t0             int64
	round          atomic.Int64
}

// body returns the next round's remote-write request, uncompressed.
func (w *pushWorkload) body() []byte {
	r := w.round.Add(1) - 1
	g := int(r) % w.groups
	ts := w.t0 + (r/int64(w.groups))*15_000
	req := &prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, w.series)}
	for i := range req.Timeseries {
		req.Timeseries[i] = prompb.TimeSeries{
			Labels: []prompb.Label{{Name: "__name__", Value: "bench_metric_" + strconv.Itoa(i%20)},
				{Name: "cluster", Value: "eu-west-1"}, {Name: "env", Value: "production"},
				{Name: "group", Value: strconv.Itoa(g)}, {Name: "instance", Value: fmt.Sprintf("10.1.%d.%d:9100", i/250, i%250)},
				{Name: "job", Value: "node"}, {Name: "namespace", Value: "monitoring"}, {Name: "pod", Value: "node-exporter-" + strconv.Itoa(i)},
				{Name: "region", Value: "eu"}, {Name: "series", Value: strconv.Itoa(i)}},
			Samples: []prompb.Sample{{Timestamp: ts, Value: float64(r) * 1.5}},
		}
	}
	raw, err := req.Marshal()
	if err != nil {
		panic(err)
	}
	return raw
}

func cpuNanos() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// anyAddrPool sends every push to one address, whatever the ring says.
type anyAddrPool struct {
	p    *distributor.GRPCClientPool
	addr string
}

func (a anyAddrPool) GetClientFor(string) (distributor.IngesterClient, error) {
	return a.p.GetClientFor(a.addr)
}

// BenchmarkPushPathRF1 is the single-node ingest scenario in process: remote-write requests of 2000
// series × 10 labels × 1 sample (20k series in all) into one ACTIVE node's distributor (RF 1,
// ServeHTTP called directly), then to its own ingester, WAL fsync on (the default). Variants:
//
//	grpc-generated: over gRPC to the node's server decoding with the generated code (before);
//	grpc-rawcodec:  over gRPC to a server with ingesterpb.RawCodec + RegisterIngesterServerRaw;
//	local:          distributor.WithLocalClient: no gRPC for this node's own replica.
//
// cpu-ns/sample is the process' CPU time (user+system, all goroutines) per sample around the pushes
// only: the number to compare with the bench scenario's CPU seconds per million samples.
//
//	go test -run '^$' -bench PushPathRF1 -count 5 ./ingester/ | tee new.txt; benchstat new.txt
func BenchmarkPushPathRF1(b *testing.B) {
	c := startInProcess(b, 1, "-distributor.ingestion-rate-limit", "0", "-distributor.replication-factor", "1")
	s, cfg := c.servers[0], c.cfgs[0]
	svc := &ingesterService{store: s.store, writable: s.writable, fence: s.ingest.fence}

	rawLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	rawSrv := grpc.NewServer(grpc.MaxRecvMsgSize(cfg.Distributor.MaxRecvMsgSize),
		grpc.ForceServerCodecV2(ingesterpb.RawCodec{Pool: distributor.BufferPool()}))
	ingesterpb.RegisterIngesterServerRaw(rawSrv, rawIngesterService{svc})
	go func() { _ = rawSrv.Serve(rawLn) }()
	b.Cleanup(rawSrv.Stop)

	grpcPool := distributor.NewGRPCClientPool(time.Minute, nil,
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(cfg.Distributor.MaxRecvMsgSize)))
	b.Cleanup(func() { _ = grpcPool.Close() })
	w := &pushWorkload{series: 2000, groups: 10, t0: time.Now().Add(-3 * time.Hour).UnixMilli()}
	for _, v := range []struct {
		name string
		pool distributor.ClientPool
	}{
		{"grpc-generated", grpcPool},
		{"grpc-rawcodec", anyAddrPool{grpcPool, rawLn.Addr().String()}},
		{"local", distributor.WithLocalClient(grpcPool, cfg.GRPCAddr, newLocalClient(svc))},
	} {
		d, err := distributor.New(cfg.Distributor, distributor.Deps{Ring: s.node, Clients: v.pool})
		if err != nil {
			b.Fatal(err)
		}
		push := func() {
			req := httptest.NewRequest(http.MethodPost, "/api/v1/push", bytes.NewReader(snappy.Encode(nil, w.body())))
			req.Header.Set("Content-Encoding", "snappy")
			req.Header.Set("Content-Type", "application/x-protobuf")
			rec := httptest.NewRecorder()
			start := cpuNanos()
			d.ServeHTTP(rec, req)
			cpu.Add(cpuNanos() - start)
			if rec.Code != http.StatusOK {
				b.Fatalf("%d %s", rec.Code, rec.Body)
			}
		}
		for range w.groups { // create every series first: the scenario measures after a warm-up
			push()
		}
		b.Run(v.name, func(b *testing.B) {
			cpu.Store(0)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				push()
			}
			d.Wait()
			n := float64(b.N * w.series)
			b.ReportMetric(n/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(cpu.Load())/n, "cpu-ns/sample")
		})
	}
}

var cpu atomic.Int64

// BenchmarkIngesterPushDecode isolates the ingester's side of one request (2000 series × 10 labels,
// existing series, in-memory store without WAL): the generated decode + Push (before) vs PushRaw.
func BenchmarkIngesterPushDecode(b *testing.B) {
	cfg := memstoreTestConfig()
	st := openTestStore(b, cfg)
	svc := &ingesterService{store: st, writable: func() (bool, string) { return true, "" }}
	ctx := ingesterTenantCtx("t")
	w := &pushWorkload{series: 2000, groups: 1, t0: 1}
	for _, v := range []struct {
		name string
		push func([]byte) (*ingesterpb.PushResponse, error)
	}{
		{"generated", func(raw []byte) (*ingesterpb.PushResponse, error) {
			req := new(ingesterpb.PushRequest)
			if err := proto.Unmarshal(raw, req); err != nil {
				return nil, err
			}
			return svc.Push(ctx, req)
		}},
		{"raw", func(raw []byte) (*ingesterpb.PushResponse, error) { return rawIngesterService{svc}.PushRaw(ctx, raw) }},
	} {
		b.Run(v.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				raw := w.body()
				b.StartTimer()
				resp, err := v.push(raw)
				if err != nil || len(resp.GetErrors()) > 0 {
					b.Fatal(err, resp.GetErrors())
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*w.series), "ns/sample")
		})
	}
}
