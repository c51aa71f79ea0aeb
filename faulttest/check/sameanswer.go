package check

import (
	"fmt"
	"sort"
)

// Answer is what one member answered to the final query through its own query API: the samples,
// each once per time the answer held it, or the error that stopped it.
type Answer struct {
	Member  string
	Samples []SampleID
	Err     string
}

// SameAnswerResult is the figures of the same-answer checker.
type SameAnswerResult struct {
	Members int `json:"members"`
	// Answered counts the members whose query succeeded.
	Answered int `json:"answered"`
	// Reference is the member the others are compared with: the first that answered.
	Reference string `json:"reference,omitempty"`
	Samples   int    `json:"samples"`
	// Differ lists, per member whose answer is not the reference's, how many samples only it has
	// and how many only the reference has, with the first of each.
	Differ []string `json:"differ,omitempty"`
	// Failed lists the members whose query failed, with the error.
	Failed []string `json:"failed,omitempty"`
}

// Valid is the verdict: every member answered, and every answer holds exactly the reference's
// samples (repeats included: a sample answered twice by one member and once by another is a
// difference, since a querier's replica merge must return it once).
func (r *SameAnswerResult) Valid() bool {
	return r.Members > 0 && r.Answered == r.Members && len(r.Differ) == 0 && len(r.Failed) == 0
}

func (r *SameAnswerResult) String() string {
	v := "PASS"
	if !r.Valid() {
		v = "FAIL"
	}
	s := fmt.Sprintf("%s members=%d answered=%d samples=%d reference=%s members-that-differ=%d",
		v, r.Members, r.Answered, r.Samples, r.Reference, len(r.Differ))
	for _, l := range [][]string{r.Failed, r.Differ} {
		for i, x := range l {
			if i == 5 {
				break
			}
			s += "\n    " + x
		}
	}
	return s
}

// CheckSameAnswer is the same-answer checker: the same query sent through every member's query API
// after the cluster recovered must return the same samples through each. A member that answers with
// less (it reads only the blocks in its own bucket, or misses a replica) or more (a sample
// duplicated by a failed merge) than the others fails it, whatever the other checkers say about the
// union of what is stored.
func CheckSameAnswer(answers []Answer) SameAnswerResult {
	res := SameAnswerResult{Members: len(answers)}
	var ref map[SampleID]int
	for _, a := range answers {
		if a.Err != "" {
			res.Failed = append(res.Failed, fmt.Sprintf("%s: %s", a.Member, a.Err))
			continue
		}
		res.Answered++
		got := make(map[SampleID]int, len(a.Samples))
		for _, id := range a.Samples {
			got[id]++
		}
		if ref == nil {
			ref, res.Reference, res.Samples = got, a.Member, len(a.Samples)
			continue
		}
		onlyHere, onlyRef := diffCounts(got, ref), diffCounts(ref, got)
		if len(onlyHere) > 0 || len(onlyRef) > 0 {
			res.Differ = append(res.Differ, fmt.Sprintf("%s: %d samples (%d not in %s's answer, first %s; %d of %s's missing, first %s)",
				a.Member, len(a.Samples), len(onlyHere), res.Reference, firstIDs(onlyHere, 3), len(onlyRef), res.Reference, firstIDs(onlyRef, 3)))
		}
	}
	return res
}

// diffCounts returns, sorted, the samples a holds more times than b.
func diffCounts(a, b map[SampleID]int) []SampleID {
	var out []SampleID
	for id, n := range a {
		if n > b[id] {
			out = append(out, id)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Writer != out[j].Writer {
			return out[i].Writer < out[j].Writer
		}
		return out[i].Seq < out[j].Seq
	})
	return out
}
