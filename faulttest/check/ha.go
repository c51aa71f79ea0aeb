package check

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// HAOutcome is what one replica of an HA pair learned about one of its samples.
type HAOutcome int

// HA write outcomes: stored (200), deduplicated (202: dropped by the HA tracker), failed (4xx: not
// stored), unknown (5xx or no answer, and the replica gave up: stored or not).
const (
	HAUnknown HAOutcome = iota
	HAStored
	HADeduped
	HAFailed
)

// HASample is one sample of the HA-pair workload: the replica that scraped it (1 or 2) and its
// timestamp (ms), which identify it. Replicas write at distinct timestamps.
type HASample struct {
	Replica int
	T       int64
}

func (s HASample) String() string { return fmt.Sprintf("r%d@%d", s.Replica, s.T) }

// HAWrite is one sample of the HA-pair workload and its final outcome (after the replica's retries).
type HAWrite struct {
	HASample
	Outcome HAOutcome
}

// HAResult is the figures of the ha checker.
type HAResult struct {
	Written  int `json:"written"`
	Stored   int `json:"stored_200"`
	Deduped  int `json:"deduped_202"`
	Read     int `json:"read"`
	Switches int `json:"switches"`
	// MaxGap is the longest time between two consecutive samples read (information: the failover
	// windows, and the faults' outages).
	MaxGap time.Duration `json:"max_gap"`
	// Lost are samples answered 200 and not read; DroppedStored samples answered 202 and read;
	// Foreign samples read that no replica wrote.
	Lost          []HASample `json:"lost,omitempty"`
	DroppedStored []HASample `json:"dropped_but_stored,omitempty"`
	Foreign       []HASample `json:"foreign,omitempty"`
	// Overlaps are samples of one replica read between two samples of the other replica closer
	// together than the failover timeout: both replicas stored at overlapping times (duplicates).
	Overlaps []HASample `json:"overlaps,omitempty"`
	// Unjustified are samples answered 202 with no sample of the other replica read within
	// MaxDropDistance of them: dropped while nobody's data was being stored (a gap).
	Unjustified []HASample `json:"unjustified_drops,omitempty"`
}

// Valid is the verdict: nothing acknowledged lost, nothing deduplicated stored, no overlap, no drop
// without the other replica's data around it, nothing foreign.
func (r *HAResult) Valid() bool {
	return len(r.Lost) == 0 && len(r.DroppedStored) == 0 && len(r.Foreign) == 0 && len(r.Overlaps) == 0 &&
		len(r.Unjustified) == 0
}

func (r *HAResult) String() string {
	v := "PASS"
	if !r.Valid() {
		v = "FAIL"
	}
	s := fmt.Sprintf("%s written=%d stored=%d deduped=%d read=%d switches=%d max-gap=%s lost=%d dropped-but-stored=%d overlaps=%d unjustified-drops=%d foreign=%d",
		v, r.Written, r.Stored, r.Deduped, r.Read, r.Switches, r.MaxGap.Round(time.Millisecond), len(r.Lost),
		len(r.DroppedStored), len(r.Overlaps), len(r.Unjustified), len(r.Foreign))
	for _, l := range []struct {
		name string
		s    []HASample
	}{{"lost", r.Lost}, {"dropped-but-stored", r.DroppedStored}, {"overlaps", r.Overlaps}, {"unjustified", r.Unjustified}, {"foreign", r.Foreign}} {
		if len(l.s) > 0 {
			s += fmt.Sprintf(" first-%s=%v", l.name, l.s[:min(len(l.s), 5)])
		}
	}
	return s
}

// CheckHA judges the HA-pair workload: writes are both replicas' samples with their outcomes, read
// the samples the cluster returned at the end (the replica label is gone from the series: the
// replica is known from the value). failover is -distributor.ha-tracker.failover-timeout;
// maxDropDistance bounds how far (in sample time) the other replica's nearest stored sample may be
// from a dropped one (the failover timeout plus the refresh period plus slack); drops within
// maxDropDistance of endMs (the workload's end) are not judged: the elected replica's last samples
// may have been given up on.
//
// No gap: a sample dropped with 202 must have the other replica's data around it. No duplicate: a
// sample of one replica must not sit between two samples of the other that are closer together
// than the failover timeout — a failback takes at least a failover timeout of silence from the
// replica that took over, so only two replicas stored at once produce that.
func CheckHA(writes []HAWrite, read []HASample, failover, maxDropDistance time.Duration, endMs int64) HAResult {
	res := HAResult{Written: len(writes), Read: len(read)}
	written := map[HASample]HAOutcome{}
	for _, w := range writes {
		written[w.HASample] = w.Outcome
		switch w.Outcome {
		case HAStored:
			res.Stored++
		case HADeduped:
			res.Deduped++
		}
	}
	got := map[HASample]bool{}
	byReplica := map[int][]int64{}
	for _, s := range read {
		got[s] = true
		o, ok := written[s]
		switch {
		case !ok:
			res.Foreign = append(res.Foreign, s)
		case o == HADeduped:
			res.DroppedStored = append(res.DroppedStored, s)
		}
		byReplica[s.Replica] = append(byReplica[s.Replica], s.T)
	}
	for _, w := range writes {
		if w.Outcome == HAStored && !got[w.HASample] {
			res.Lost = append(res.Lost, w.HASample)
		}
	}
	for _, ts := range byReplica {
		slices.Sort(ts)
	}
	sorted := slices.Clone(read)
	slices.SortFunc(sorted, func(a, b HASample) int { return cmp.Compare(a.T, b.T) })
	for i := 1; i < len(sorted); i++ {
		res.MaxGap = max(res.MaxGap, time.Duration(sorted[i].T-sorted[i-1].T)*time.Millisecond)
		if sorted[i].Replica != sorted[i-1].Replica {
			res.Switches++
		}
	}
	// Overlaps: s between the other replica's neighbours closer than the failover timeout.
	for _, s := range sorted {
		for r, ts := range byReplica {
			if r == s.Replica {
				continue
			}
			i, _ := slices.BinarySearch(ts, s.T)
			if i > 0 && i < len(ts) && ts[i]-ts[i-1] <= failover.Milliseconds() {
				res.Overlaps = append(res.Overlaps, s)
			} else if i < len(ts) && ts[i] == s.T {
				res.Overlaps = append(res.Overlaps, s)
			}
		}
	}
	// Unjustified drops: no other replica's sample read within maxDropDistance.
	for _, w := range writes {
		if w.Outcome != HADeduped || w.T > endMs-maxDropDistance.Milliseconds() {
			continue
		}
		near := false
		for r, ts := range byReplica {
			if r == w.Replica {
				continue
			}
			i, _ := slices.BinarySearch(ts, w.T-maxDropDistance.Milliseconds())
			if i < len(ts) && ts[i] <= w.T+maxDropDistance.Milliseconds() {
				near = true
			}
		}
		if !near {
			res.Unjustified = append(res.Unjustified, w.HASample)
		}
	}
	return res
}
