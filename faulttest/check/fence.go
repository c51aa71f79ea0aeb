package check

import (
	"fmt"
	"slices"
)

// FenceAck is one member's acknowledgement of one series of an acknowledged write: the member
// stored it (the series is not in the member's per-series errors of a successful call).
type FenceAck struct {
	Series string // the series, as the harness names it (its labels)
	Member string
	// Stamp is the ring index the request was stamped with (0: unstamped).
	Stamp uint64
}

// FenceResult is the figures of the write-fencing checker.
type FenceResult struct {
	// Writes counts the acknowledged writes (series) checked, Acks their acknowledgements.
	Writes int `json:"writes"`
	Acks   int `json:"acks"`
	// NonOwnerAcks counts acknowledgements by a member that does not own the series (fail):
	// fencing must have refused them. UnderOwned counts writes acknowledged by fewer than Quorum
	// owners (fail): the acknowledgement to the client rested on members that do not hold the
	// series for the readers and hand-overs that follow the ring.
	NonOwnerAcks int      `json:"non_owner_acks"`
	UnderOwned   int      `json:"under_owned_writes"`
	Quorum       int      `json:"quorum"`
	Examples     []string `json:"examples,omitempty"`
}

// Valid is the verdict: every acknowledgement came from an owner, and every write from a quorum
// of them.
func (r *FenceResult) Valid() bool { return r.NonOwnerAcks == 0 && r.UnderOwned == 0 }

func (r *FenceResult) String() string {
	v := "PASS"
	if !r.Valid() {
		v = "FAIL"
	}
	s := fmt.Sprintf("%s writes=%d acks=%d acks-from-non-owners=%d writes-under-%d-owners=%d",
		v, r.Writes, r.Acks, r.NonOwnerAcks, r.Quorum, r.UnderOwned)
	for _, e := range r.Examples {
		s += "\n    " + e
	}
	return s
}

// CheckFencing is the write-fencing checker: no acknowledged write lands on a member that does not
// own its series. acked lists the acknowledged writes' series; acks every acknowledgement of a
// series by a member (acks of series not in acked, e.g. of a write that failed on the others, are
// ignored); owners returns a series' replication set on the ring every member had applied when
// the writes were made — the caller's schedule must make that one ring (ownership changed before
// the writes, none during them), so that "owner" means the same thing to every acknowledging member.
func CheckFencing(acked []string, acks []FenceAck, owners func(series string) []string, quorum int) FenceResult {
	res := FenceResult{Quorum: quorum, Writes: len(acked)}
	by := map[string][]FenceAck{}
	for _, a := range acks {
		by[a.Series] = append(by[a.Series], a)
	}
	example := func(format string, args ...any) {
		if len(res.Examples) < 5 {
			res.Examples = append(res.Examples, fmt.Sprintf(format, args...))
		}
	}
	for _, s := range acked {
		own := owners(s)
		seen := map[string]bool{}
		fromOwners := 0
		for _, a := range by[s] {
			if seen[a.Member] {
				continue // a retried request acknowledged twice by the same member counts once
			}
			seen[a.Member] = true
			res.Acks++
			if slices.Contains(own, a.Member) {
				fromOwners++
				continue
			}
			res.NonOwnerAcks++
			example("series %s acknowledged by %s (stamp %d), which does not own it; owners %v", s, a.Member, a.Stamp, own)
		}
		if fromOwners < quorum {
			res.UnderOwned++
			example("series %s acknowledged to the client with %d acknowledgements from its owners %v, quorum %d", s, fromOwners, own, quorum)
		}
	}
	return res
}
