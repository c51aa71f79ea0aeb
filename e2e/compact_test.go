package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/raftingest/raftingest/compact"
	pc "github.com/raftingest/raftingest/internal/proccluster"
	"github.com/raftingest/raftingest/ringstate"
	"github.com/raftingest/raftingest/storage"
)

// compactDeletionDelay is the test's -compactor.deletion-delay: long enough for many query rounds
// through every member while the replaced blocks are marked, short enough to see them swept.
const compactDeletionDelay = 5 * time.Second

// compactFlags make the compactor run every second with a short lease, so a test sees it work and
// sees the lease pass on within seconds, and sweep what it replaced after compactDeletionDelay
// (the sweepers then look every second).
var compactFlags = []string{"-ingester.flush-check-period=1h", "-compactor.interval=1s", "-compactor.lease-duration=4s",
	"-compactor.deletion-delay=" + compactDeletionDelay.String()}

// compactRing rebuilds the ring read through addr as ringstate's, for the placement the
// distributor (and so the compactor) uses.
func compactRing(t *testing.T, c *pc.Cluster, addr string) *ringstate.Ring {
	t.Helper()
	v, err := c.Ring(addr)
	if err != nil {
		t.Fatal(err)
	}
	var ms []ringstate.Member
	for i, m := range v.Members {
		st, err := ringstate.ParseState(m.RingState)
		if err != nil {
			t.Fatal(err)
		}
		rm := ringstate.Member{ID: ringstate.MemberID(m.ID), State: st, RaftAddr: fmt.Sprintf("127.0.0.1:%d", i+1)}
		for _, tok := range m.Tokens {
			rm.Tokens = append(rm.Tokens, ringstate.Token(tok))
		}
		ms = append(ms, rm)
	}
	r, err := ringstate.Restore(ms, v.TimeMs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// labelsOfKey turns a sampleKey's series ("a=b,c=d") back into labels.
func labelsOfKey(k string) labels.Labels {
	var kv []string
	for _, p := range strings.Split(k, ",") {
		n, v, _ := strings.Cut(p, "=")
		kv = append(kv, n, v)
	}
	return labels.FromStrings(kv...)
}

// compactState is what one poll of the members' buckets found.
type compactState struct {
	blocks map[string][]storage.Meta // by member: complete blocks not marked for deletion
	dirs   map[string][]string
	// marked are the directories of blocks marked for deletion (replaced, still served), by member.
	marked map[string][]string
}

// markedCount is how many blocks carry a deletion mark.
func (s compactState) markedCount() int {
	n := 0
	for _, d := range s.marked {
		n += len(d)
	}
	return n
}

func readCompactState(t *testing.T, nodes []*pc.Node, tenant string) compactState {
	t.Helper()
	s := compactState{blocks: map[string][]storage.Meta{}, dirs: map[string][]string{}, marked: map[string][]string{}}
	for _, n := range nodes {
		if _, err := os.Stat(filepath.Join(n.DataDir, "blocks", tenant)); err != nil {
			continue // no block yet (or every one deleted: the bucket removes empty directories)
		}
		for _, d := range storageBlockDirs(t, filepath.Join(n.DataDir, "blocks"), tenant) {
			data, err := os.ReadFile(filepath.Join(d, storage.MetaFilename))
			if err != nil {
				continue // deleted under us
			}
			m, err := storage.ReadMeta(data)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(d, storage.DeletionMarkFilename)); err == nil {
				s.marked[n.ID] = append(s.marked[n.ID], d)
				continue
			}
			s.blocks[n.ID] = append(s.blocks[n.ID], m)
			s.dirs[n.ID] = append(s.dirs[n.ID], d)
		}
	}
	return s
}

// compacted reports whether every member holds at most one block per 2h window, every block
// comes from a compaction and all of a window's blocks from the same one, and why not. (A member
// the placement gave no series of a window holds no block of it.)
func (s compactState) compacted(nodes []*pc.Node) (bool, string) {
	group := map[int64]string{}
	for _, n := range nodes {
		seen := map[int64]bool{}
		for _, m := range s.blocks[n.ID] {
			w := m.MinTime / (2 * 3_600_000)
			g := storage.CompactionGroup(&m.BlockMeta)
			switch {
			case g == "":
				return false, fmt.Sprintf("%s holds flushed block %s", n.ID, m.ULID)
			case seen[w]:
				return false, fmt.Sprintf("%s holds two blocks of window %d", n.ID, w)
			case group[w] != "" && group[w] != g:
				return false, fmt.Sprintf("window %d has blocks of compactions %s and %s", w, group[w], g)
			}
			seen[w], group[w] = true, g
		}
	}
	return len(group) > 0, "no block yet"
}

// checkCompactedPlacement checks that every series is in exactly RF (3) members' compacted blocks
// — the replication the placement gives it, never fewer copies and no duplicate — and that all
// members together hold exactly want (of want's series; other series written meanwhile are
// checked by the caller). When every member is writable in the ring now (as it was
// when the compactor placed the blocks, in the usual case) it also checks that each member holds
// exactly the series whose replication set includes it.
func checkCompactedPlacement(t *testing.T, c *pc.Cluster, promtool string, nodes []*pc.Node, s compactState,
	tenant string, want map[sampleKey]float64) {
	t.Helper()
	r := compactRing(t, c, nodes[0].GRPCAddr)
	place := compact.RingPlacement(r, ringstate.Placement{RF: 3}, 0)
	allWritable := r.Len() == len(nodes)
	for _, m := range r.Members() {
		allWritable = allWritable && m.State == ringstate.ACTIVE
	}
	wantSeries := map[string]bool{}
	for k := range want {
		wantSeries[k.series] = true
	}
	union := map[sampleKey]float64{}
	copies := map[string]int{}
	holders := map[string][]string{}
	for _, n := range nodes {
		got := storagePromtoolDump(t, promtool, s.dirs[n.ID])
		for k, v := range got {
			if wantSeries[k.series] { // the load written meanwhile is checked by reading it back
				union[k] = v
			}
		}
		held := map[string]bool{}
		for k := range got {
			held[k.series] = true
		}
		for k := range held {
			copies[k]++
			holders[k] = append(holders[k], n.ID)
		}
	}
	for k := range want {
		if copies[k.series] != 3 {
			t.Fatalf("series %s is in the compacted blocks of %v, want exactly RF=3 members", k.series, holders[k.series])
		}
		if p := place(tenant, labelsOfKey(k.series)); allWritable && !slices.Equal(p, sortedCopy(holders[k.series], p)) {
			t.Fatalf("series %s is held by %v, but its replication set is %v", k.series, holders[k.series], p)
		}
	}
	storageRequireSamples(t, "every member's compacted blocks together", want, union)
}

// sortedCopy returns the elements of got ordered as in like (got's extra elements last), so that
// two sets compare with slices.Equal.
func sortedCopy(got, like []string) []string {
	out := make([]string, 0, len(got))
	for _, x := range like {
		if slices.Contains(got, x) {
			out = append(out, x)
		}
	}
	for _, x := range got {
		if !slices.Contains(like, x) {
			out = append(out, x)
		}
	}
	return out
}

// compactAnswers asks every member the same queries and returns the raw answers by member.
func compactAnswers(t *testing.T, nodes []*pc.Node, at time.Time) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range nodes {
		var parts []string
		for _, q := range []string{`count_over_time(compacted[15m])`, `sum(compacted)`, `count(compacted)`} {
			p := url.Values{"query": {q}, "time": {fmt.Sprint(at.Unix())}}
			parts = append(parts, rawData(t, n.HTTPAddr, "/prometheus/api/v1/query", p))
		}
		out[n.ID] = strings.Join(parts, "\n")
	}
	return out
}

// loadWriter pushes 10 series of metric load, one sample each every 50ms, through the members in
// turn, until stopped.
type loadWriter struct {
	t      *testing.T
	done   chan struct{}
	result chan loadResult
}

type loadResult struct {
	acked int
	err   error
}

func startLoad(t *testing.T, nodes []*pc.Node) *loadWriter {
	l := &loadWriter{t: t, done: make(chan struct{}), result: make(chan loadResult, 1)}
	go func() {
		var r loadResult
		ts := time.Now().UnixMilli()
		for i := 0; ; i++ {
			select {
			case <-l.done:
				l.result <- r
				return
			case <-time.After(50 * time.Millisecond):
			}
			ts = max(ts+1, time.Now().UnixMilli())
			req := &prompb.WriteRequest{}
			for k := range 10 {
				req.Timeseries = append(req.Timeseries, series([]string{"__name__", "load", "k", fmt.Sprint(k)},
					prompb.Sample{Timestamp: ts, Value: float64(i)}))
			}
			n := nodes[i%len(nodes)]
			if err := remoteWrite("http://"+n.HTTPAddr+"/api/v1/push", req); err != nil && r.err == nil {
				r.err = fmt.Errorf("push %d via %s: %w", i, n.ID, err)
			} else if err == nil {
				r.acked += 10
			}
		}
	}()
	t.Cleanup(func() {
		select {
		case <-l.done:
		default:
			close(l.done)
			<-l.result
		}
	})
	return l
}

// stop ends the load and returns how many samples were acknowledged, failing the test if any push
// failed.
func (l *loadWriter) stop() int {
	close(l.done)
	r := <-l.result
	if r.err != nil {
		l.t.Fatal(r.err)
	}
	if r.acked == 0 {
		l.t.Fatal("the load wrote nothing")
	}
	return r.acked
}

// TestProcess_CompactorNodeLocalRF3 is issue 13's compaction test with real processes: five
// members, RF 3, node-local buckets. After every member flushed, the lease holder (the Raft
// leader) merges the replicas' blocks: every member ends with one block per range holding exactly
// the series it replicates, all members' blocks together hold exactly the samples written, every
// query answers as before (and during: queries through every member at every poll), writes going
// on meanwhile all succeed and read back, and ringctl and /ring say who compacts. The replaced
// blocks are marked for deletion, not deleted: while they are (for -compactor.deletion-delay)
// queries through every member keep answering completely, and after it every one of them is gone
// from disk. Then more data is written and flushed, and the compacting member is killed with
// SIGKILL as soon as it has placed a merged part: once it is back, the cluster converges again to
// one block per member and range, with no sample lost and none duplicated, and what that merge
// replaced is swept after the delay.
func TestProcess_CompactorNodeLocalRF3(t *testing.T) {
	skipShort(t)
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (make deps)")
	}
	started := time.Now()
	c, nodes := startCluster5(t, compactFlags...)
	const tenant = "anonymous"
	want := storageWriteSeries(t, nodes[0].HTTPAddr, "", "compacted", 60, 40)
	// A push is acknowledged at quorum: wait until the third replica of every series holds it too,
	// so that every member's flush below writes all it was given (and the compactor has RF sources).
	pc.Eventually(t, 10*time.Second, "every replica holds the written samples", func() (bool, string) {
		total := 0.0
		for _, n := range nodes {
			total += storageMetric(t, n.HTTPAddr, `cortex_ingester_ingested_samples_total{user="anonymous"}`)
		}
		return total == 3*60*40, fmt.Sprintf("%v samples ingested over the members, want %d", total, 3*60*40)
	})
	at := time.Now()
	before := compactAnswers(t, nodes, at)
	// Write load while the members flush and the compactor works: every push must succeed.
	load := startLoad(t, nodes)
	flushedBlocks := 0 // the sources the compactor must replace: what the members' flushes wrote
	for _, n := range nodes {
		code, body := storagePostFlush(t, n.AdminAddr)
		if code != http.StatusOK {
			t.Fatalf("%s: POST /ingester/flush: %d %s", n.ID, code, body)
		}
		m := regexp.MustCompile(` in (\d+) blocks`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("%s: POST /ingester/flush answered %q, which names no block count", n.ID, body)
		}
		k, _ := strconv.Atoi(m[1])
		flushedBlocks += k
	}
	if flushedBlocks < 2 {
		t.Fatalf("the members' flushes wrote %d blocks: nothing to compact, the test would prove nothing", flushedBlocks)
	}
	t.Logf("written and flushed in %v", time.Since(started).Round(time.Millisecond))

	// Query load while the compactor works: every answer, through every member, at every poll,
	// is the answer from before the flush.
	var s compactState
	polls := 0
	replaced := map[string]bool{} // every marked block directory seen
	pc.Eventually(t, 60*time.Second, "one compacted block per member and range", func() (bool, string) {
		if during := compactAnswers(t, nodes, at); fmt.Sprint(during) != fmt.Sprint(before) {
			t.Fatalf("answers changed during compaction (poll %d):\nbefore %v\nduring %v", polls, before, during)
		}
		polls++
		s = readCompactState(t, nodes, tenant)
		for _, ds := range s.marked {
			for _, d := range ds {
				replaced[d] = true
			}
		}
		return s.compacted(nodes)
	})
	t.Logf("compacted in %v (%d query rounds through every member meanwhile)", time.Since(started).Round(time.Millisecond), polls)
	// The deletion delay: the replaced blocks are marked and still on disk (served), every query
	// through every member still answers completely; after the delay the sweepers delete them.
	if s.markedCount() == 0 {
		t.Fatalf("no replaced block is marked for deletion right after the compaction (delay %v): they were deleted at once", compactDeletionDelay)
	}
	delayPolls := 0
	pc.Eventually(t, 3*compactDeletionDelay+10*time.Second, "the replaced blocks swept after the deletion delay", func() (bool, string) {
		st := readCompactState(t, nodes, tenant)
		for _, ds := range st.marked {
			for _, d := range ds {
				replaced[d] = true
			}
		}
		if st.markedCount() == 0 {
			return true, ""
		}
		if during := compactAnswers(t, nodes, at); fmt.Sprint(during) != fmt.Sprint(before) {
			t.Fatalf("answers changed during the deletion delay (%d blocks marked):\nbefore %v\nduring %v", st.markedCount(), before, during)
		}
		delayPolls++
		return false, fmt.Sprintf("%d blocks still marked", st.markedCount())
	})
	if delayPolls == 0 {
		t.Fatal("no query round ran while the replaced blocks were marked")
	}
	for d := range replaced {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("replaced block %s is still on disk after the deletion delay: %v", d, err)
		}
	}
	if after := compactAnswers(t, nodes, at); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("answers changed once the replaced blocks were swept:\nbefore %v\nafter  %v", before, after)
	}
	cleaned := 0.0
	for _, n := range nodes {
		cleaned += storageMetric(t, n.HTTPAddr, "cortex_compactor_blocks_cleaned_total")
	}
	if cleaned < float64(len(replaced)) {
		t.Fatalf("the members' sweepers counted %v blocks cleaned, want at least the %d replaced blocks seen", cleaned, len(replaced))
	}
	t.Logf("%d replaced blocks marked, answered through every member in %d query rounds during the %v delay, then swept",
		len(replaced), delayPolls, compactDeletionDelay)
	checkCompactedPlacement(t, c, promtool, nodes, s, tenant, want)
	acked := load.stop()
	for _, n := range nodes {
		p := url.Values{"query": {`sum(count_over_time(load[10m]))`}, "time": {fmt.Sprintf("%.3f", float64(time.Now().UnixMilli())/1000)}}
		if got := rawData(t, n.HTTPAddr, "/prometheus/api/v1/query", p); !strings.Contains(got, fmt.Sprintf(`"%d"`, acked)) {
			t.Fatalf("via %s: %s, want the %d load samples acknowledged during the compaction", n.ID, got, acked)
		}
	}
	t.Logf("%d load samples written during the compaction, every one acknowledged and read back", acked)

	// Who compacts: the leader holds the lease; ringctl status and ring, and /ring, say so.
	st, err := c.Status(nodes[0].GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := c.Ringctl("-addr", nodes[1].GRPCAddr, "status", "-o", "json")
	var sj struct {
		Compactor struct {
			Holder string `json:"holder"`
			Epoch  uint64 `json:"epoch"`
			Held   bool   `json:"held"`
		} `json:"compactor"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &sj) != nil || sj.Compactor.Holder != st.Leader || sj.Compactor.Epoch == 0 {
		t.Fatalf("ringctl status: %d %s %s; leader %s", code, out, errOut, st.Leader)
	}
	if out, _, _ := c.Ringctl("-addr", nodes[2].GRPCAddr, "ring"); !strings.Contains(out, "compactor: "+st.Leader+" (epoch ") {
		t.Fatalf("ringctl ring does not say %s compacts:\n%s", st.Leader, out)
	}
	if _, page, err := pc.HTTPGet(nodes[3].HTTPAddr, "/ring", ""); err != nil || !strings.Contains(page, `data-holder="`+st.Leader+`"`) {
		t.Fatalf("/ring does not show the compactor %s (%v)", st.Leader, err)
	}
	var leader *pc.Node
	for _, n := range nodes {
		if n.ID == st.Leader {
			leader = n
		}
	}
	if v := storageMetric(t, leader.HTTPAddr, "cortex_compactor_blocks_marked_for_deletion_total"); v < float64(flushedBlocks) {
		t.Fatalf("leader marked %v blocks for deletion, want at least the %d blocks the members' flushes wrote", v, flushedBlocks)
	}

	// More data in the same range, flushed by every member: the range now holds the compacted
	// parts and new flushes. Kill the compacting member as soon as it has placed a part.
	more := storageWriteSeries(t, nodes[1].HTTPAddr, "", "compacted", 60, 2)
	for k, v := range more {
		want[k] = v
	}
	logBefore := strings.Count(leader.Log(), "compactor: placed a merged block")
	for _, n := range nodes {
		if code, body := storagePostFlush(t, n.AdminAddr); code != http.StatusOK {
			t.Fatalf("%s: POST /ingester/flush: %d %s", n.ID, code, body)
		}
	}
	pc.Eventually(t, 30*time.Second, "the compactor places a part of the second merge", func() (bool, string) {
		return strings.Count(leader.Log(), "compactor: placed a merged block") > logBefore, ""
	})
	leader.Kill()
	t.Logf("killed %s (the compactor) after it placed a part, at %v", leader.ID, time.Since(started).Round(time.Millisecond))
	// The survivors answer every sample meanwhile: nothing was deleted before its copies were placed.
	var alive []*pc.Node
	for _, n := range nodes {
		if n != leader {
			alive = append(alive, n)
		}
	}
	mid := readCompactState(t, nodes, tenant)
	union := map[sampleKey]float64{}
	for _, n := range nodes {
		for k, v := range storagePromtoolDump(t, promtool, mid.dirs[n.ID]) {
			if strings.HasPrefix(k.series, "__name__=compacted,") {
				union[k] = v
			}
		}
	}
	storageRequireSamples(t, "every bucket right after the kill", want, union)

	leader.Start()
	waitActive(t, c, alive[0].GRPCAddr, "a", "b", "c", "d", "e")
	pc.Eventually(t, 90*time.Second, "one compacted block per member and range after the kill", func() (bool, string) {
		s = readCompactState(t, nodes, tenant)
		return s.compacted(nodes)
	})
	checkCompactedPlacement(t, c, promtool, nodes, s, tenant, want)
	t.Logf("converged after the kill in %v", time.Since(started).Round(time.Millisecond))
	// What the merges after the kill replaced is marked, then swept; the answer keeps every sample.
	pc.Eventually(t, 3*compactDeletionDelay+10*time.Second, "the blocks replaced after the kill swept", func() (bool, string) {
		st := readCompactState(t, nodes, tenant)
		return st.markedCount() == 0, fmt.Sprintf("%d blocks still marked", st.markedCount())
	})
	s = readCompactState(t, nodes, tenant)
	if ok, why := s.compacted(nodes); !ok {
		t.Fatalf("after the sweep: %s", why)
	}
	checkCompactedPlacement(t, c, promtool, nodes, s, tenant, want)
}
