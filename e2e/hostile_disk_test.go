package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	pc "github.com/raftingest/raftingest/internal/proccluster"

	"github.com/raftingest/raftingest/internal/tmpfs"
)

// hdWrite builds a request of n series named name, one sample each at ts, with labels padded to
// pad bytes, and records the samples in want.
func hdWrite(name string, n, pad int, ts int64, want map[sampleKey]float64) *prompb.WriteRequest {
	req := &prompb.WriteRequest{}
	for i := range n {
		s := series([]string{"__name__", name, "i", fmt.Sprintf("%05d", i), "pad", strings.Repeat("p", pad)},
			prompb.Sample{Timestamp: ts, Value: float64(i) + 0.5})
		req.Timeseries = append(req.Timeseries, s)
		if want != nil {
			want[sampleKey{keyOf(s.Labels), ts}] = float64(i) + 0.5
		}
	}
	return req
}

func hdReady(t *testing.T, n *pc.Node) (int, string) {
	t.Helper()
	code, body, err := pc.HTTPGet(n.HTTPAddr, "/ready", "")
	if err != nil {
		t.Fatalf("GET /ready: %v", err)
	}
	return code, body
}

// hdRequireAcked checks that every acknowledged sample is stored on n, with its value.
func hdRequireAcked(t *testing.T, what string, n *pc.Node, name string, acked map[sampleKey]float64) {
	t.Helper()
	got, err := queryIngester(context.Background(), n.GRPCAddr, "anonymous", name)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for k, v := range acked {
		if g, ok := got[k]; !ok || g != v {
			t.Fatalf("%s: acknowledged sample %v = %v lost (got %v, present %v)", what, k, v, g, ok)
		}
	}
}

// TestProcess_WALDiskFull runs a real node whose WAL (-wal.dir) is on a small tmpfs and fills that
// filesystem to the last byte. A push that needs new WAL pages is answered 5xx (nothing of it
// acknowledged); the node goes not-ready (/ready 503 naming the cause), raftingest_wal_failing is
// 1 and the log names the cause; later pushes are refused too, while reads go on. Once space is
// freed the node recovers by itself — no restart — /ready is 200 again and pushes succeed, the
// client's retry of the refused push included; after a kill -9 and a restart every acknowledged
// sample is still there. The Raft state and the bucket stay on the ordinary disk, so only the
// WAL fails.
func TestProcess_WALDiskFull(t *testing.T) {
	skipShort(t)
	mnt := tmpfs.Mount(t, 8<<20)
	walDir := filepath.Join(mnt, "wal")
	c := pc.New(t, fastFlags...)
	a := c.Start("a", "-bootstrap", "-wal.dir", walDir, "-distributor.replication-factor", "1")
	waitActive(t, c, a.GRPCAddr, "a")
	if code, body := hdReady(t, a); code != 200 {
		t.Fatalf("/ready before the disk filled: %d %s", code, body)
	}

	now := time.Now().UnixMilli()
	acked := map[sampleKey]float64{}
	for r := range 5 {
		if code, body, err := push(a.HTTPAddr, "", hdWrite("hd_before", 50, 20, now-int64(5-r)*1000, acked)); err != nil || code != 200 {
			t.Fatalf("push before the disk filled: %d %q %v", code, body, err)
		}
	}

	filler := tmpfs.Fill(t, mnt)
	// Label values of ~300 bytes on 1500 new series: the WAL needs pages the file does not have.
	big := hdWrite("hd_big", 1500, 300, now, nil)
	code, body, err := push(a.HTTPAddr, "", big)
	if err != nil || code/100 != 5 {
		t.Fatalf("push into a full WAL filesystem: %d %q %v, want 5xx", code, body, err)
	}
	if len(body) > 400 {
		body = body[:400] + "…"
	}
	t.Logf("push while the disk is full: %d %s", code, strings.TrimSpace(body))
	code, body = hdReady(t, a)
	if code != 503 || !strings.Contains(body, "no space left on device") || !strings.Contains(body, "WAL") {
		t.Fatalf("/ready while the WAL fails: %d %q, want 503 naming the WAL and ENOSPC", code, body)
	}
	t.Logf("/ready: %d %s", code, strings.TrimSpace(body))
	if v := storageMetric(t, a.HTTPAddr, "raftingest_wal_failing"); v != 1 {
		t.Fatalf("raftingest_wal_failing = %v while failing, want 1", v)
	}
	if log := a.Log(); !strings.Contains(log, "wal commit failed") || !strings.Contains(log, "no space left on device") {
		t.Fatalf("no log line naming the WAL failure and its cause:\n%s", log)
	}
	// Refused while failing, even a push that would fit.
	if code, body, err := push(a.HTTPAddr, "", hdWrite("hd_small", 1, 0, now, nil)); err != nil || code/100 != 5 {
		t.Fatalf("small push while failing: %d %q %v, want 5xx", code, body, err)
	}
	// Reads go on: the ingester's own gRPC query and the PromQL API.
	hdRequireAcked(t, "reading while the WAL fails", a, "hd_before", acked)
	qcode, ans, raw := getAPI(t, a.HTTPAddr, "/prometheus/api/v1/query", url.Values{"query": {"count(hd_before)"}})
	if qcode != 200 || ans.Status != "success" || !strings.Contains(string(ans.Data.Result), `"50"`) {
		t.Fatalf("PromQL while the WAL fails: %d %s, want count 50", qcode, raw)
	}

	// Space comes back: the node recovers by itself.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	pc.Eventually(t, 20*time.Second, "/ready 200 after space was freed", func() (bool, string) {
		code, body := hdReady(t, a)
		return code == 200, fmt.Sprintf("%d %s", code, body)
	})
	if v := storageMetric(t, a.HTTPAddr, "raftingest_wal_failing"); v != 0 {
		t.Fatalf("raftingest_wal_failing = %v after recovery, want 0", v)
	}
	if !strings.Contains(a.Log(), "wal recovered") {
		t.Fatal("no log line of the recovery")
	}
	// The client retries the refused push: accepted (idempotent if the WAL's retry committed it).
	bigAcked := map[sampleKey]float64{}
	if code, body, err := push(a.HTTPAddr, "", hdWrite("hd_big", 1500, 300, now, bigAcked)); err != nil || code != 200 {
		t.Fatalf("retry of the refused push after recovery: %d %q %v", code, body, err)
	}
	if code, body, err := push(a.HTTPAddr, "", hdWrite("hd_before", 50, 20, now+1000, acked)); err != nil || code != 200 {
		t.Fatalf("push after recovery: %d %q %v", code, body, err)
	}
	hdRequireAcked(t, "after recovery", a, "hd_before", acked)
	hdRequireAcked(t, "after recovery", a, "hd_big", bigAcked)

	// Nothing acknowledged is lost across a crash: the WAL replays it.
	a.Kill()
	a.Start()
	waitActive(t, c, a.GRPCAddr, "a")
	hdRequireAcked(t, "after kill -9 and restart", a, "hd_before", acked)
	hdRequireAcked(t, "after kill -9 and restart", a, "hd_big", bigAcked)
}
