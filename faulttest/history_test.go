package faulttest

import (
	"testing"
	"time"

	"github.com/raftingest/raftingest/faulttest/check"
)

func TestLeaders_Elections(t *testing.T) {
	var l Leaders
	l.Saw(1, "n0", 0)              // the leader from before the workload
	l.Saw(2, "n1", 10*time.Second) // inside a fault
	l.Saw(3, "n2", 17*time.Second) // within 5s of a heal
	l.Saw(4, "n0", 40*time.Second) // no fault anywhere near: unprovoked
	l.Saw(4, "n0", 41*time.Second) // the same sighting again: counted once
	faults := []FaultWindow{{Start: 9 * time.Second, End: 13 * time.Second}}
	total, unprovoked := l.Elections(faults)
	if total != 3 || unprovoked != 1 {
		t.Fatalf("elections total=%d unprovoked=%d, want 3 and 1", total, unprovoked)
	}
	if obs := l.Observations(); len(obs) != 4 {
		t.Fatalf("observations %v, want one per (term, member)", obs)
	}
}

func TestThroughputOf(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ok := func(sec int) check.Write {
		return check.Write{Outcome: check.OutcomeOK, Return: start.Add(time.Duration(sec) * time.Second)}
	}
	hist := []check.Write{ok(1), ok(2), ok(5), ok(12), ok(13), {Outcome: check.OutcomeUnknown, Return: start.Add(3 * time.Second)}}
	tp := ThroughputOf(hist, start, []FaultWindow{{Start: 4 * time.Second, End: 8 * time.Second}}, start.Add(14*time.Second))
	if tp.Before != 0.5 || tp.During != 0.25 || tp.After != 2.0/6 {
		t.Fatalf("throughput %+v, want before 2/4s, during 1/4s, after 2/6s", tp)
	}
	if calm := ThroughputOf(hist, start, nil, start.Add(10*time.Second)); calm.Before != 0.5 {
		t.Fatalf("no faults: %+v, want 5 acked over 10s in before", calm)
	}
}
