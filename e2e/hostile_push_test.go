package e2e

// Hostile pushes against a real node (issue 12, the write path): each bad request gets its status
// code and a message naming the limit, and the node's memory and goroutines stay bounded
// throughout. One node on loopback; the whole file runs in well under a minute once the binaries
// are built.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	pc "github.com/raftingest/raftingest/internal/proccluster"
)

// hostilePushFlags are the node's limits in these tests: small enough to reach quickly, the other
// limits at their defaults.
var hostilePushFlags = []string{
	"-bootstrap",
	"-auth.multitenancy-enabled=true", // one tenant per case: their rate and series limits do not mix
	"-distributor.max-recv-msg-size=4194304",
	"-distributor.instance-limits.max-inflight-push-requests=4",
	"-distributor.ingestion-rate-limit=2000", "-distributor.ingestion-burst-size=5000",
	"-ingester.max-global-series-per-user=50",
	"-server.http-read-timeout=3s", "-server.http-read-header-timeout=1s", "-server.http-idle-timeout=2s",
}

// rawRequest sends an HTTP/1.1 request written by hand on conn (so that headers may lie) and
// returns the answer's status and body.
func hpRawRequest(t *testing.T, conn net.Conn, head string, body []byte, halfClose bool) (int, string) {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(body); err != nil {
		t.Fatal(err)
	}
	if halfClose {
		_ = conn.(*net.TCPConn).CloseWrite()
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func hpPushHead(tenant string, contentLength int) string {
	cl := ""
	if contentLength >= 0 {
		cl = fmt.Sprintf("Content-Length: %d\r\n", contentLength)
	}
	return "POST /api/v1/push HTTP/1.1\r\nHost: raftingest\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\n" +
		"X-Scope-OrgID: " + tenant + "\r\n" + cl + "\r\n"
}

func hpDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// processMetrics reads the node's RSS and goroutine count from /metrics.
func hpProcessMetrics(t *testing.T, n *pc.Node) (rss, goroutines float64) {
	t.Helper()
	_, body, err := pc.HTTPGet(n.HTTPAddr, "/metrics", "")
	if err != nil {
		t.Fatal(err)
	}
	return metricValue(body, "process_resident_memory_bytes"), metricValue(body, "go_goroutines")
}

func TestProcess_HostilePushes(t *testing.T) {
	skipShort(t)
	c := pc.New(t, fastFlags...)
	n := c.Start("a", hostilePushFlags...)
	waitActive(t, c, n.GRPCAddr, "a")
	now := time.Now().UnixMilli()
	good := func(name string) *prompb.WriteRequest {
		return &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series([]string{"__name__", name, "job", "hostile"}, prompb.Sample{Timestamp: now, Value: 1})}}
	}
	// A good push first, so that every pool and connection a push uses exists in the baseline.
	if code, body, err := push(n.HTTPAddr, "warmup", good("warmup")); err != nil || code != 200 {
		t.Fatalf("warm-up push: %d %q %v", code, body, err)
	}
	rss0, goroutines0 := hpProcessMetrics(t, n)
	t.Logf("baseline: RSS %.0f MiB, %v goroutines", rss0/(1<<20), goroutines0)
	maxRSS := rss0
	checkBounded := func(t *testing.T) {
		t.Helper()
		rss, _ := hpProcessMetrics(t, n)
		maxRSS = max(maxRSS, rss)
		// Every bomb below is refused within a few times -distributor.max-recv-msg-size (4 MiB).
		// Before the bounds, the empty-series bomb alone decoded to 2M Series (> 400 MB).
		if rss > rss0+256<<20 {
			t.Fatalf("RSS %.0f MiB, baseline %.0f MiB: a refused request cost more than 256 MiB", rss/(1<<20), rss0/(1<<20))
		}
	}
	expect := func(t *testing.T, code int, body string, err error, wantCode int, wantMsg ...string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if code != wantCode {
			t.Fatalf("status %d, want %d: %s", code, wantCode, body)
		}
		t.Logf("%d %.400s", code, body)
		for _, m := range wantMsg {
			if !strings.Contains(body, m) {
				t.Fatalf("message %q lacks %q", body, m)
			}
		}
		checkBounded(t)
	}

	t.Run("oversized body", func(t *testing.T) {
		big := make([]byte, 5<<20)
		_, _ = rand.Read(big)
		code, body, err := pushRaw(n.HTTPAddr, "t-big", big, "snappy")
		expect(t, code, body, err, 413, "-distributor.max-recv-msg-size")
		// The same without a Content-Length (chunked): refused once 4 MiB have arrived.
		req, _ := http.NewRequest(http.MethodPost, "http://"+n.HTTPAddr+"/api/v1/push", io.MultiReader(bytes.NewReader(big)))
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("X-Scope-OrgID", "t-big")
		req.ContentLength = -1
		resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			expect(t, resp.StatusCode, string(b), nil, 413, "-distributor.max-recv-msg-size")
		} // else the server closed the connection while the client still sent: refused too
	})

	t.Run("lying content-length", func(t *testing.T) {
		// Announces 4,000,000 bytes, sends 10 and stops sending.
		code, body := hpRawRequest(t, hpDial(t, n.HTTPAddr), hpPushHead("t-liar", 4_000_000), []byte("0123456789"), true)
		expect(t, code, body, nil, 400, "shorter than its Content-Length")
		// Announces 4,000,000 bytes, sends 10, and keeps the connection open: cut at the read timeout.
		start := time.Now()
		code, body = hpRawRequest(t, hpDial(t, n.HTTPAddr), hpPushHead("t-liar", 4_000_000), []byte("0123456789"), false)
		expect(t, code, body, nil, 408, "-server.http-read-timeout")
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("a stalled body held its request for %s (read timeout 3s)", d)
		}
	})

	t.Run("snappy bombs", func(t *testing.T) {
		header := func(n uint64) []byte {
			var b []byte
			for n >= 0x80 {
				b = append(b, byte(n)|0x80)
				n >>= 7
			}
			return append(append(b, byte(n)), 0x00, 0x61)
		}
		code, body, err := pushRaw(n.HTTPAddr, "t-snappy", header(4<<30-1), "snappy")
		expect(t, code, body, err, 413, "exceeds the limit", "-distributor.max-recv-msg-size")
		code, body, err = pushRaw(n.HTTPAddr, "t-snappy", header(3<<20), "snappy")
		expect(t, code, body, err, 400, "more than a body of", "can hold")
		// 4 MiB of zeros in ~200 KB: within the limits, decompressed, and not a WriteRequest.
		code, body, err = pushRaw(n.HTTPAddr, "t-snappy", snappy.Encode(nil, make([]byte, 4<<20)), "snappy")
		expect(t, code, body, err, 400, "illegal tag")
	})

	t.Run("many empty series", func(t *testing.T) {
		// 2M empty TimeSeries (4 MiB decompressed, 200 KB on the wire).
		code, body, err := pushRaw(n.HTTPAddr, "t-empty", snappy.Encode(nil, bytes.Repeat([]byte{0x0a, 0x00}, 2<<20)), "snappy")
		expect(t, code, body, err, 413, "-distributor.max-series-per-request")
		// 90k series of one empty sample each: under the series cap, over the expansion bound.
		code, body, err = pushRaw(n.HTTPAddr, "t-empty", snappy.Encode(nil, bytes.Repeat([]byte{0x0a, 0x02, 0x12, 0x00}, 90_000)), "snappy")
		expect(t, code, body, err, 413, "empty or near-empty")
	})

	t.Run("too many in-flight requests", func(t *testing.T) {
		// Four pushes announce a body and send none: they hold the four slots.
		var conns []net.Conn
		for range 4 {
			conn := hpDial(t, n.HTTPAddr)
			if _, err := io.WriteString(conn, hpPushHead("t-inflight", 1000)); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, conn)
		}
		pc.Eventually(t, 5*time.Second, "4 pushes in flight", func() (bool, string) {
			v := metricOf(t, n, "cortex_distributor_inflight_push_requests")
			return v == 4, fmt.Sprint(v)
		})
		code, body, err := push(n.HTTPAddr, "t-inflight", good("inflight"))
		expect(t, code, body, err, 503, "-distributor.instance-limits.max-inflight-push-requests")
		if v := metricOf(t, n, `cortex_distributor_instance_rejected_requests_total{reason="distributor_max_inflight_push_requests"}`); v < 1 {
			t.Fatalf("rejected requests metric %v", v)
		}
		for _, conn := range conns {
			conn.Close()
		}
		pc.Eventually(t, 5*time.Second, "the slots back", func() (bool, string) {
			code, body, err := push(n.HTTPAddr, "t-inflight", good("inflight"))
			return err == nil && code == 200, fmt.Sprint(code, body, err)
		})
	})

	t.Run("ancient and future timestamps", func(t *testing.T) {
		req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series([]string{"__name__", "ancient", "job", "hostile"},
			prompb.Sample{Timestamp: -9e18, Value: 1}, prompb.Sample{Timestamp: now, Value: 2}, prompb.Sample{Timestamp: now + 3_600_000, Value: 3})}}
		code, body, err := push(n.HTTPAddr, "t-time", req)
		expect(t, code, body, err, 400, "-validation.past-grace-period", "-9000000000000000000", "-validation.create-grace-period", `__name__="ancient"`)
		got, err := queryIngester(context.Background(), n.GRPCAddr, "t-time", "ancient")
		if err != nil || len(got) != 1 || got[sampleKey{"__name__=ancient,job=hostile", now}] != 2 {
			t.Fatalf("stored: %v %v, want only the sample of now", got, err)
		}
		// Within the past grace period but older than the oldest block range in memory (the
		// flusher's cutoff: at most now - 1h with the default 2h ranges).
		old := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series([]string{"__name__", "flushed_range", "job", "hostile"},
			prompb.Sample{Timestamp: now - 3*3_600_000 - 60_000, Value: 1})}}
		code, body, err = push(n.HTTPAddr, "t-time", old)
		expect(t, code, body, err, 400, "oldest block range still in memory", "sample-out-of-bounds")
		// A flush has nothing ancient to walk: it returns at once.
		start := time.Now()
		if code, _, body := adminDo(t, http.MethodPost, n.AdminAddr, "/ingester/flush"); code != 200 {
			t.Fatalf("flush: %d %s", code, body)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Fatalf("flush took %s", d)
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		var req prompb.WriteRequest
		for i := range 6000 {
			req.Timeseries = append(req.Timeseries, series([]string{"__name__", "rated", "i", fmt.Sprint(i)}, prompb.Sample{Timestamp: now, Value: 1}))
		}
		code, body, err := push(n.HTTPAddr, "t-rate", &req)
		expect(t, code, body, err, 429, "-distributor.ingestion-rate-limit", "shared by 1 healthy distributors")
		if v := metricOf(t, n, `cortex_discarded_samples_total{reason="rate_limited",user="t-rate"}`); v != 6000 {
			t.Fatalf("discarded rate_limited: %v", v)
		}
	})

	t.Run("series limit", func(t *testing.T) {
		var req prompb.WriteRequest
		for i := range 60 {
			req.Timeseries = append(req.Timeseries, series([]string{"__name__", "limited", "i", fmt.Sprintf("%02d", i)}, prompb.Sample{Timestamp: now, Value: 1}))
		}
		code, body, err := push(n.HTTPAddr, "t-series", &req)
		expect(t, code, body, err, 400, "-ingester.max-global-series-per-user=50", "too many series")
		got, err := queryIngester(context.Background(), n.GRPCAddr, "t-series", "limited")
		if err != nil || len(got) != 50 {
			t.Fatalf("stored %d series (%v), want the limit of 50", len(got), err)
		}
		if v := metricOf(t, n, "raftingest_ingester_max_series_per_tenant"); v != 50 {
			t.Fatalf("limit in force %v", v)
		}
	})

	t.Run("slow headers and idle connections", func(t *testing.T) {
		// Headers never finished: closed after -server.http-read-header-timeout (1s).
		slow := hpDial(t, n.HTTPAddr)
		_, _ = io.WriteString(slow, "POST /api/v1/push HTTP/1.1\r\nHost: raftingest\r\n")
		// A keep-alive connection left idle after a push: closed after -server.http-idle-timeout (2s).
		idle := hpDial(t, n.HTTPAddr)
		raw, _ := good("idle").Marshal()
		body := snappy.Encode(nil, raw)
		if code, msg := hpRawRequest(t, idle, hpPushHead("t-idle", len(body)), body, false); code != 200 {
			t.Fatalf("push on the idle connection: %d %s", code, msg)
		}
		for name, conn := range map[string]net.Conn{"slow headers": slow, "idle keep-alive": idle} {
			start := time.Now()
			_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
			_, err := io.Copy(io.Discard, conn)
			if err != nil || time.Since(start) > 10*time.Second {
				t.Fatalf("%s: connection not closed by the server: %v after %s", name, err, time.Since(start))
			}
		}
	})

	// Nothing a refused request started is left running, and the memory stayed bounded.
	pc.Eventually(t, 15*time.Second, "goroutines back to the baseline", func() (bool, string) {
		_, g := hpProcessMetrics(t, n)
		return g <= goroutines0+20, fmt.Sprintf("%v goroutines, baseline %v", g, goroutines0)
	})
	checkBounded(t)
	t.Logf("RSS: baseline %.0f MiB, highest seen %.0f MiB", rss0/(1<<20), maxRSS/(1<<20))
}
