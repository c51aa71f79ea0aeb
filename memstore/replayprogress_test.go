package memstore

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
)

func TestReplayProgress_FractionETADescribe(t *testing.T) {
	for _, tc := range []struct {
		name     string
		p        ReplayProgress
		fraction float64
		eta      time.Duration
		describe string
	}{
		{"not started", ReplayProgress{}, 1, 0, "opening the WAL"},
		{"empty WAL", ReplayProgress{Running: true}, 1, 0, "replaying the WAL: it is empty"},
		{"first record", ReplayProgress{Running: true, FirstSeq: 11, LastSeq: 20, Seq: 11, Records: 1, Elapsed: time.Second},
			0.1, 9 * time.Second, "replaying the WAL: 10% (record 11 of 11..20, 1 replayed), 1s elapsed, ETA 9s"},
		{"half", ReplayProgress{Running: true, FirstSeq: 1, LastSeq: 100, Seq: 50, Records: 50, Elapsed: 10 * time.Second},
			0.5, 10 * time.Second, "replaying the WAL: 50% (record 50 of 1..100, 50 replayed), 10s elapsed, ETA 10s"},
		{"before the first record", ReplayProgress{Running: true, FirstSeq: 5, LastSeq: 9}, 0, 0,
			"replaying the WAL: 0% (record 0 of 5..9, 0 replayed), 0s elapsed"},
		{"done", ReplayProgress{Done: true, FirstSeq: 1, LastSeq: 9, Seq: 9, Records: 9, Elapsed: 1500 * time.Millisecond},
			1, 0, "WAL replayed: 9 records in 1.5s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.Fraction(); got != tc.fraction {
				t.Errorf("Fraction() = %v, want %v", got, tc.fraction)
			}
			if got := tc.p.ETA(); got != tc.eta {
				t.Errorf("ETA() = %v, want %v", got, tc.eta)
			}
			if got := tc.p.Describe(); got != tc.describe {
				t.Errorf("Describe() = %q, want %q", got, tc.describe)
			}
		})
	}
	var nilTracker *ReplayTracker
	if p := nilTracker.Progress(); p.Running || p.Done {
		t.Errorf("a nil tracker reads %+v, want not started", p)
	}
}

// TestReplayTracker_FollowsOpen reads the tracker and the progress gauge from inside the replay
// (the hook runs on the replay's visitor, between two records) and after it.
func TestReplayTracker_FollowsOpen(t *testing.T) {
	dir := t.TempDir()
	st := mustOpen(t, testConfig(dir))
	const records = 20
	for i := range records {
		// One push at a time: each is committed (and logged) before the next starts, so each is
		// at least one record of its own.
		mustPush(t, st, "t1", ser(labels.FromStrings("__name__", "m", "i", string(rune('a'+i))), Sample{int64(1000 + i), 1}))
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(dir)
	cfg.ReplayTracker = &ReplayTracker{}
	reg := prometheus.NewRegistry()
	var mid []ReplayProgress
	var gauges []float64
	st2, err := open(cfg, reg, testLogger(), openOptions{replayHook: func(seq uint64) {
		mid = append(mid, cfg.ReplayTracker.Progress())
		gauges = append(gauges, gaugeValue(t, reg, "raftingest_wal_replay_progress_ratio"))
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if len(mid) < records {
		t.Fatalf("the replay visited %d records, want at least %d", len(mid), records)
	}
	for i, p := range mid {
		if !p.Running || p.Done {
			t.Fatalf("record %d: progress %+v, want running", i, p)
		}
		if p.Records != int64(i+1) {
			t.Fatalf("record %d: Records = %d, want %d", i, p.Records, i+1)
		}
		if p.Seq < p.FirstSeq || p.Seq > p.LastSeq {
			t.Fatalf("record %d: seq %d outside [%d, %d]", i, p.Seq, p.FirstSeq, p.LastSeq)
		}
		if i > 0 && p.Fraction() <= mid[i-1].Fraction() {
			t.Fatalf("record %d: fraction %v did not grow from %v", i, p.Fraction(), mid[i-1].Fraction())
		}
		if g := gauges[i]; g != p.Fraction() {
			t.Fatalf("record %d: raftingest_wal_replay_progress_ratio = %v, want the tracker's %v", i, g, p.Fraction())
		}
		if !strings.HasPrefix(p.Describe(), "replaying the WAL: ") {
			t.Fatalf("record %d: Describe() = %q", i, p.Describe())
		}
	}
	if f := mid[0].Fraction(); f <= 0 || f >= 0.5 {
		t.Errorf("first record: fraction %v, want in (0, 0.5)", f)
	}
	if f := mid[len(mid)-1].Fraction(); f != 1 {
		t.Errorf("last record: fraction %v, want 1", f)
	}
	end := cfg.ReplayTracker.Progress()
	if !end.Done || end.Running || end.Records != int64(st2.ReplayReport().Records) || end.Fraction() != 1 {
		t.Errorf("after Open: progress %+v (report %d records), want done with every record", end, st2.ReplayReport().Records)
	}
	if g := testutil.ToFloat64(st2.metrics.walReplayProgress); g != 1 {
		t.Errorf("raftingest_wal_replay_progress_ratio after Open = %v, want 1", g)
	}
	if e1, e2 := end.Elapsed, cfg.ReplayTracker.Progress().Elapsed; e1 != e2 {
		t.Errorf("elapsed keeps growing after the replay: %v then %v", e1, e2)
	}
}
