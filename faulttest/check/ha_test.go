package check

import (
	"testing"
	"time"
)

// haHistory is a clean HA-pair history: r1 stored every 100ms from 0 to 5s while r2 is dropped,
// r1 silent, r2 elected at 8s (3s failover) and stored to 15s.
func haHistory() ([]HAWrite, []HASample) {
	var ws []HAWrite
	var read []HASample
	for t := int64(0); t <= 15_000; t += 100 {
		if t <= 5000 {
			ws = append(ws, HAWrite{HASample{1, t}, HAStored})
			read = append(read, HASample{1, t})
		}
		switch {
		case t < 8000:
			ws = append(ws, HAWrite{HASample{2, t + 1}, HADeduped})
		default:
			ws = append(ws, HAWrite{HASample{2, t + 1}, HAStored})
			read = append(read, HASample{2, t + 1})
		}
	}
	return ws, read
}

func TestCheckHA_CleanFailoverPasses(t *testing.T) {
	ws, read := haHistory()
	res := CheckHA(ws, read, 3*time.Second, 5*time.Second, 15_001)
	if !res.Valid() || res.Switches != 1 || res.MaxGap != 3001*time.Millisecond {
		t.Fatalf("%s", res.String())
	}
}

func TestCheckHA_FailsOnEachViolation(t *testing.T) {
	for name, mut := range map[string]func(ws []HAWrite, read []HASample) ([]HAWrite, []HASample){
		"lost": func(ws []HAWrite, read []HASample) ([]HAWrite, []HASample) { return ws, read[1:] },
		"dropped but stored": func(ws []HAWrite, read []HASample) ([]HAWrite, []HASample) {
			return ws, append(read, HASample{2, 301})
		},
		"foreign": func(ws []HAWrite, read []HASample) ([]HAWrite, []HASample) {
			return ws, append(read, HASample{3, 7})
		},
		// r2 stored once amid r1's samples: both replicas stored at overlapping times.
		"overlap": func(ws []HAWrite, read []HASample) ([]HAWrite, []HASample) {
			for i := range ws {
				if ws[i].HASample == (HASample{2, 2001}) {
					ws[i].Outcome = HAStored
				}
			}
			return ws, append(read, HASample{2, 2001})
		},
		// r1's data gone from 1s on (never stored) while r2 is dropped: a gap.
		"unjustified drop": func(ws []HAWrite, read []HASample) ([]HAWrite, []HASample) {
			var keepW []HAWrite
			for _, w := range ws {
				if w.Replica == 1 && w.T > 1000 {
					w.Outcome = HAUnknown
				}
				keepW = append(keepW, w)
			}
			var keepR []HASample
			for _, s := range read {
				if s.Replica != 1 || s.T <= 1000 {
					keepR = append(keepR, s)
				}
			}
			return keepW, keepR
		},
	} {
		ws, read := haHistory()
		ws, read = mut(ws, read)
		res := CheckHA(ws, read, 3*time.Second, 5*time.Second, 15_001)
		n := map[string]int{"lost": len(res.Lost), "dropped but stored": len(res.DroppedStored), "foreign": len(res.Foreign),
			"overlap": len(res.Overlaps), "unjustified drop": len(res.Unjustified)}
		if res.Valid() || n[name] == 0 {
			t.Errorf("%s: not found as such: %s", name, res.String())
		}
	}
}
