// Package check holds the fault-test checkers: pure functions over histories collected by a run.
// Each one returns a result value with its figures and a verdict, never calls t.Fatal, and has a test
// that feeds it a broken history and sees it fail.
package check

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// SampleID names one unique sample of the unique-samples workload: the writer that produced it and
// its sequence number within that writer. The value written is derived from both, so a sample read
// back identifies itself.
type SampleID struct {
	Writer int
	Seq    uint64
}

func (s SampleID) String() string { return fmt.Sprintf("w%d/%d", s.Writer, s.Seq) }

// Outcome is what a client learned about one write.
type Outcome int

// Write outcomes, in Jepsen's terms: ok (acknowledged), fail (definitely not applied, e.g. a 4xx),
// info (unknown: a timeout, a connection reset, a 5xx after which some replicas may hold the sample).
const (
	OutcomeUnknown Outcome = iota // "info"
	OutcomeOK
	OutcomeFail
)

func (o Outcome) String() string {
	switch o {
	case OutcomeOK:
		return "ok"
	case OutcomeFail:
		return "fail"
	}
	return "info"
}

// Write is one attempted sample and what the client learned.
type Write struct {
	ID      SampleID
	Outcome Outcome
	Invoke  time.Time
	Return  time.Time
}

// Read is one read of the set: the samples it returned and the writers it covers (nil: all). A read
// that covers a writer claims to return every sample of that writer that was acknowledged before it
// was invoked.
type Read struct {
	Invoke, Return time.Time
	Writers        []int // covered writers; nil means every writer
	Samples        []SampleID
}

func (r *Read) covers(w int) bool { return r.Writers == nil || slices.Contains(r.Writers, w) }

// Vanished is a sample a read returned that a later read covering it did not.
type Vanished struct {
	ID         SampleID
	SeenAt     time.Time // return time of the read that saw it
	MissingAt  time.Time // invoke time of the later read that did not
	Reappeared bool      // a still later read (or the final read) had it again
}

// SetResult is Jepsen's set accounting of a run.
type SetResult struct {
	Attempted int `json:"attempted"`
	Acked     int `json:"acked"`
	Failed    int `json:"failed"`
	Unknown   int `json:"unknown"`

	OK         int `json:"ok"`         // acknowledged and read back
	Lost       int `json:"lost"`       // acknowledged and not read back (fail)
	Recovered  int `json:"recovered"`  // outcome unknown, read back (fine)
	Unexpected int `json:"unexpected"` // read back but never attempted, or definitely failed (fail)
	Duplicated int `json:"duplicated"` // read back more than once (fail)
	Vanished   int `json:"vanished"`   // seen by a read, then missing from a later covering read (fail)

	LostIDs       []SampleID `json:"lost_ids,omitempty"`
	UnexpectedIDs []SampleID `json:"unexpected_ids,omitempty"`
	DuplicatedIDs []SampleID `json:"duplicated_ids,omitempty"`
	VanishedIDs   []Vanished `json:"vanished_ids,omitempty"`

	// LostWindow is the [first, last] acknowledgement time of the lost samples, to line them up with
	// the fault timeline.
	LostFirstAck, LostLastAck time.Time `json:"-"`
}

// Valid is the verdict: nothing acknowledged lost, nothing unexpected, nothing duplicated, nothing
// vanished.
func (r *SetResult) Valid() bool {
	return r.Lost == 0 && r.Unexpected == 0 && r.Duplicated == 0 && r.Vanished == 0
}

// String is a one-line summary in the report's style.
func (r *SetResult) String() string {
	v := "PASS"
	if !r.Valid() {
		v = "FAIL"
	}
	s := fmt.Sprintf("%s attempted=%d acked=%d failed=%d unknown=%d ok=%d lost=%d recovered=%d unexpected=%d duplicated=%d vanished=%d",
		v, r.Attempted, r.Acked, r.Failed, r.Unknown, r.OK, r.Lost, r.Recovered, r.Unexpected, r.Duplicated, r.Vanished)
	if r.Lost > 0 {
		s += fmt.Sprintf(" lost-acked-between=[%s, %s] first-lost=%s", r.LostFirstAck.Format(time.RFC3339Nano),
			r.LostLastAck.Format(time.RFC3339Nano), firstIDs(r.LostIDs, 5))
	}
	return s
}

func firstIDs(ids []SampleID, n int) string {
	var b strings.Builder
	for i, id := range ids {
		if i == n {
			fmt.Fprintf(&b, " (+%d)", len(ids)-n)
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(id.String())
	}
	return b.String()
}

// CheckSet does the set accounting of writes against the final read (taken after every fault healed
// and the cluster recovered) and checks the periodic reads taken during the run for samples that
// appeared and then vanished. Each SampleID may be written more than once (a retry) — the best
// outcome counts: ok beats info beats fail.
func CheckSet(writes []Write, periodic []Read, final Read) SetResult {
	var res SetResult
	best := map[SampleID]Write{}
	for _, w := range writes {
		prev, seen := best[w.ID]
		if !seen || rank(w.Outcome) > rank(prev.Outcome) {
			best[w.ID] = w
		}
	}
	res.Attempted = len(best)
	count := map[SampleID]int{}
	for _, s := range final.Samples {
		count[s]++
	}
	ids := make([]SampleID, 0, len(best))
	for id := range best {
		ids = append(ids, id)
	}
	sortIDs(ids)
	for _, id := range ids {
		w := best[id]
		n := count[id]
		switch w.Outcome {
		case OutcomeOK:
			res.Acked++
			if n > 0 {
				res.OK++
			} else {
				res.Lost++
				res.LostIDs = append(res.LostIDs, id)
				if res.LostFirstAck.IsZero() || w.Return.Before(res.LostFirstAck) {
					res.LostFirstAck = w.Return
				}
				if w.Return.After(res.LostLastAck) {
					res.LostLastAck = w.Return
				}
			}
		case OutcomeUnknown:
			res.Unknown++
			if n > 0 {
				res.Recovered++
			}
		case OutcomeFail:
			res.Failed++
			if n > 0 {
				res.Unexpected++
				res.UnexpectedIDs = append(res.UnexpectedIDs, id)
			}
		}
	}
	read := make([]SampleID, 0, len(count))
	for id := range count {
		read = append(read, id)
	}
	sortIDs(read)
	for _, id := range read {
		if _, ok := best[id]; !ok {
			res.Unexpected++
			res.UnexpectedIDs = append(res.UnexpectedIDs, id)
		}
		if count[id] > 1 {
			res.Duplicated++
			res.DuplicatedIDs = append(res.DuplicatedIDs, id)
		}
	}
	res.VanishedIDs = vanished(periodic, final)
	res.Vanished = len(res.VanishedIDs)
	return res
}

func rank(o Outcome) int {
	switch o {
	case OutcomeOK:
		return 2
	case OutcomeUnknown:
		return 1
	}
	return 0
}

func sortIDs(ids []SampleID) {
	sort.Slice(ids, func(i, j int) bool {
		if ids[i].Writer != ids[j].Writer {
			return ids[i].Writer < ids[j].Writer
		}
		return ids[i].Seq < ids[j].Seq
	})
}

// vanished finds samples that a read returned and a read invoked after it returned, covering the
// sample's writer, did not. A sample may legitimately be missing from reads before it is first seen
// (it was not written yet, or its write is still in flight); once seen it must stay.
func vanished(periodic []Read, final Read) []Vanished {
	reads := slices.Clone(periodic)
	reads = append(reads, final)
	sort.SliceStable(reads, func(i, j int) bool { return reads[i].Invoke.Before(reads[j].Invoke) })
	sets := make([]map[SampleID]bool, len(reads))
	for i := range reads {
		sets[i] = make(map[SampleID]bool, len(reads[i].Samples))
		for _, s := range reads[i].Samples {
			sets[i][s] = true
		}
	}
	var out []Vanished
	reported := map[SampleID]bool{}
	for i := range reads {
		for _, id := range reads[i].Samples {
			if reported[id] {
				continue
			}
			for j := range reads {
				if !reads[j].Invoke.After(reads[i].Return) || !reads[j].covers(id.Writer) || sets[j][id] {
					continue
				}
				v := Vanished{ID: id, SeenAt: reads[i].Return, MissingAt: reads[j].Invoke}
				for k := j + 1; k < len(reads); k++ {
					if sets[k][id] {
						v.Reappeared = true
					}
				}
				out = append(out, v)
				reported[id] = true
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SeenAt.Before(out[j].SeenAt) })
	return out
}
