package transfer

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/grpc"

	"github.com/raftingest/raftingest/memstore"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/transferpb"
)

// Run with (the 1M case needs about 3 GB of memory and a few minutes; it never runs in make test,
// which runs no benchmarks):
//
//	go test -run x -bench Handover -benchmem ./transfer/
//	go test -run x -bench Handover -benchmem ./transfer/ -args -handover.series=100000,1000000
//	go test -run x -bench Handover -count 6 ./transfer/ > new.txt && benchstat old.txt new.txt
var handoverSeries = flag.String("handover.series", "100000",
	"BenchmarkHandover: comma-separated numbers of active series to hand over (e.g. 100000,1000000)")

// benchSamplesPerSeries is the shape of one active series: 120 samples 15s apart (30 minutes, one
// open head chunk, ~150 bytes of XOR), three labels.
const benchSamplesPerSeries = 120

// benchNode is one in-process ingester as far as the hand-over goes: a memstore with a real bbolt
// WAL (fsync on), a real gRPC server on 127.0.0.1 with the Receiver, and a Leaver.
type benchNode struct {
	id     ringstate.MemberID
	addr   string
	store  *memstore.Store
	leaver *Leaver
	m      *Metrics
	reg    *prometheus.Registry // the memstore's metrics
	walDir string
}

func newBenchNode(b testing.TB, id ringstate.MemberID, ring Ring, cfg Config) *benchNode {
	dir := b.TempDir()
	mcfg := memstore.DefaultConfig()
	mcfg.WALDir = filepath.Join(dir, "wal")
	if os.Getenv("HANDOVER_BENCH_NOSYNC") != "" { // what the CPU allows, whatever the shared disk does
		mcfg.WALSync = false
	}
	reg := prometheus.NewRegistry()
	st, err := memstore.Open(mcfg, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	m, _ := NewMetrics(nil)
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("HANDOVER_BENCH_LOG") != "" { // the Leaver's and Receiver's logs, to see where a hand-over's time goes
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	rcv, err := NewReceiver(cfg, ReceiverDeps{ID: id, Ring: ring, Store: st, DataDir: dir, Metrics: m, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	transferpb.RegisterTransferServer(srv, rcv)
	go srv.Serve(lis)
	b.Cleanup(srv.Stop)
	lv, err := NewLeaver(cfg, LeaverDeps{ID: id, Ring: ring, Store: st, Metrics: m, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	return &benchNode{id: id, addr: lis.Addr().String(), store: st, leaver: lv, m: m, reg: reg, walDir: mcfg.WALDir}
}

// fillBench pushes n active series into st (in batches of 1000 series, fsynced like any push).
func fillBench(b *testing.B, st *memstore.Store, n int) {
	const batch = 1000
	base := time.Now().Add(-time.Hour).UnixMilli()
	ss := make([]memstore.SeriesSamples, 0, batch)
	for i := 0; i < n; i += batch {
		ss = ss[:0]
		for j := i; j < min(i+batch, n); j++ {
			smp := make([]memstore.Sample, benchSamplesPerSeries)
			v := float64(j)
			for k := range smp {
				v += float64((j*31 + k*17) % 100) // a counter growing irregularly
				smp[k] = memstore.Sample{T: base + int64(k)*15_000 + int64((j+k)%5), V: v}
			}
			ss = append(ss, memstore.SeriesSamples{Samples: smp, Labels: labels.FromStrings(
				"__name__", "bench_requests_total", "instance", "host-"+strconv.Itoa(j%100), "series", strconv.Itoa(j))})
		}
		if _, err := st.Push("bench", ss); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandover measures a whole hand-over — claim, stream, import into the joiner's memstore
// and WAL (fsynced), CompleteHandover, and the leaver dropping its copy — from one in-process
// ingester to another over real gRPC on loopback, through the real Leaver and Receiver. Only Raft is
// faked (memRing applies the real ringstate at once). Each iteration hands everything back the
// other way, so no refill is needed. It also measures loopback TCP bandwidth in the same run
// (loopback-MB/s), so that MB/s can be read against what the machine's loopback can carry.
func BenchmarkHandover(b *testing.B) {
	for _, f := range strings.Split(*handoverSeries, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("-handover.series: %q is not a positive number", f)
		}
		b.Run(fmt.Sprintf("series=%d", n), func(b *testing.B) { benchHandover(b, n) })
	}
}

func benchHandover(b *testing.B, n int) {
	cfg := DefaultConfig()
	if v, err := strconv.Atoi(os.Getenv("HANDOVER_BENCH_IMPORTS")); err == nil { // to compare ImportConcurrency values
		cfg.ImportConcurrency = v
	}
	ring := newMemRing()
	nodes := [2]*benchNode{newBenchNode(b, "ing-a", ring, cfg), newBenchNode(b, "ing-b", ring, cfg)}
	fillBench(b, nodes[0].store, n)
	ring.addActive(b, nodes[0].id, nodes[0].addr, ringstate.Tokens{1, 2, 3})
	ring.must(b, registerCmd(nodes[1].id, nodes[1].addr))

	var bytes float64
	walSecs, walCommits := walCommitStats(b, nodes[:]...)
	cpu0 := cpuTime(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		from, to := nodes[i%2], nodes[(i+1)%2]
		i++
		ring.must(b, ringstate.Command{Op: ringstate.OpLeave, Member: from.id})
		before := testutil.ToFloat64(from.m.sentBytes)
		if err := from.leaver.Leave(context.Background()); err != nil {
			b.Fatal(err)
		}
		bytes += testutil.ToFloat64(from.m.sentBytes) - before
		if m := ring.member(b, to.id); m.State != ringstate.ACTIVE {
			b.Fatalf("%s is %s after the hand-over", to.id, m.State)
		}
		if got := to.store.Stats("bench").Series; got != int64(n) {
			b.Fatalf("%s holds %d series, want %d", to.id, got, n)
		}
		// The leaver is gone from the ring; it comes back as the next round's PENDING joiner.
		ring.must(b, registerCmd(from.id, from.addr))
	}
	el := b.Elapsed().Seconds()
	cpu := cpuTime(b) - cpu0
	ws, wc := walCommitStats(b, nodes[:]...)
	// CPU time (user+sys, both nodes) per hand-over: unlike the wall time, it hardly depends on
	// how busy the shared disk is.
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/handover")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N)/float64(n), "cpu-us/series")
	b.ReportMetric((ws-walSecs)/float64(b.N), "wal-commit-s/handover")
	b.ReportMetric((wc-walCommits)/float64(b.N), "wal-commits/handover")
	b.ReportMetric(float64(n)*float64(b.N)/el, "series/s")
	b.ReportMetric(bytes/1e6/el, "MB/s")
	b.ReportMetric(el/float64(b.N), "s/handover")
	b.ReportMetric(loopbackMBps(b, 256<<20), "loopback-MB/s")
}

// cpuTime returns the CPU time (user and system) this process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loopbackMBps copies size bytes over a TCP connection on 127.0.0.1 between two goroutines and
// returns the rate in MB/s.
func loopbackMBps(b *testing.B, size int64) float64 {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer lis.Close()
	got := make(chan int64, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}()
	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	start := time.Now()
	for sent := int64(0); sent < size; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	if n := <-got; n != size {
		b.Fatalf("loopback copy received %d of %d bytes", n, size)
	}
	return float64(size) / 1e6 / time.Since(start).Seconds()
}

// walCommitStats returns the WAL commit seconds and commits of nodes' memstores so far.
func walCommitStats(b *testing.B, nodes ...*benchNode) (secs, commits float64) {
	for _, n := range nodes {
		mfs, err := n.reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "cortex_ingester_wal_commit_duration_seconds" {
				for _, m := range mf.GetMetric() {
					secs += m.GetHistogram().GetSampleSum()
					commits += float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return secs, commits
}

// BenchmarkCheckChunks is what the joiner's full decode of every received chunk (checkChunks, issue
// 12) costs per sample, on the shape of BenchmarkHandover's series (120 samples, one chunk).
//
//	go test -run x -bench CheckChunks -count 6 ./transfer/ | tee new.txt; benchstat new.txt
func BenchmarkCheckChunks(b *testing.B) {
	ss := make([]Series, 1000)
	for i := range ss {
		ts, vs := make([]int64, benchSamplesPerSeries), make([]float64, benchSamplesPerSeries)
		for j := range ts {
			ts[j], vs[j] = int64(j)*15_000, float64(i*j%977)
		}
		ss[i] = Series{Tenant: "bench", Labels: labels.FromStrings("__name__", "m", "i", strconv.Itoa(i)),
			Chunks: []memstore.Chunk{xorChunk(b, ts, vs)}, LastV: vs[len(vs)-1], HasLastV: true}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := checkChunks(ss); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ss)*benchSamplesPerSeries), "ns/sample")
}
