package check

import (
	"fmt"
	"strings"
)

// WALRestart is what happened when a member whose WAL file was damaged while it was stopped was
// started again: it came up by itself (memstore cut a corrupt tail, or the damage missed every page
// in use), or it refused to start and the operator moved the file aside and started it again.
type WALRestart struct {
	Member string `json:"member"`
	File   string `json:"file"`   // the damaged WAL file
	Damage string `json:"damage"` // what the nemesis did to it
	// Started: the process served by itself; TailCut: its log says memstore cut a corrupt tail.
	Started bool `json:"started"`
	TailCut bool `json:"tail_cut,omitempty"`
	// Refused: the process exited at start; Message is the error its log gave.
	Refused bool   `json:"refused"`
	Message string `json:"message,omitempty"`
	// MovedTo is where the operator step moved the file ("" when there was none); UpAfterMove: the
	// member served after it.
	MovedTo     string `json:"moved_to,omitempty"`
	UpAfterMove bool   `json:"up_after_move,omitempty"`
	// Err is what else went wrong (neither served nor exited within the bound, the move failed).
	Err string `json:"err,omitempty"`
}

// walRefusalReasons are the words with which a WAL start error says what is wrong with the file.
var walRefusalReasons = []string{"truncated", "damaged", "corrupt", "invalid", "checksum", "version"}

// ClearWALRefusal reports whether a start error names the WAL file and says what is wrong with it,
// and whether it also tells the operator what to do ("move it away").
func ClearWALRefusal(msg, file string) (clear, advises bool) {
	if file == "" || !strings.Contains(msg, file) {
		return false, false
	}
	for _, w := range walRefusalReasons {
		if strings.Contains(strings.ToLower(msg), w) {
			clear = true
		}
	}
	return clear, strings.Contains(msg, "move it away")
}

// WALRestartResult is the figures of the WAL-restart checker.
type WALRestartResult struct {
	Corruptions   int      `json:"corruptions"`
	ByItself      int      `json:"started_by_itself"`
	TailCuts      int      `json:"tail_cuts"`
	Refused       int      `json:"refused"`
	Clear         int      `json:"clear_errors"`
	Advising      int      `json:"errors_saying_what_to_do"` // information
	OperatorSteps int      `json:"operator_steps"`
	UpAfterMove   int      `json:"up_after_operator_step"`
	Problems      []string `json:"problems,omitempty"`
}

// Valid is the verdict: every damaged member either came up by itself, or refused with an error
// that names its WAL file and says what is wrong, had the file moved aside (never deleted) and came
// up after that.
func (r *WALRestartResult) Valid() bool { return len(r.Problems) == 0 }

func (r *WALRestartResult) String() string {
	v := "PASS"
	if !r.Valid() {
		v = "FAIL"
	}
	s := fmt.Sprintf("%s corruptions=%d started-by-itself=%d (tail-cut=%d) refused=%d clear-error=%d says-what-to-do=%d operator-steps=%d up-after-operator-step=%d",
		v, r.Corruptions, r.ByItself, r.TailCuts, r.Refused, r.Clear, r.Advising, r.OperatorSteps, r.UpAfterMove)
	for _, p := range firstN(r.Problems, 5) {
		s += "\n    " + p
	}
	return s
}

// CheckWALRestarts judges the restarts of members whose WAL was damaged.
func CheckWALRestarts(rs []WALRestart) WALRestartResult {
	var res WALRestartResult
	bad := func(r WALRestart, why string) {
		res.Problems = append(res.Problems, fmt.Sprintf("%s (%s): %s", r.Member, r.Damage, why))
	}
	for _, r := range rs {
		res.Corruptions++
		if r.Err != "" {
			bad(r, r.Err)
		}
		switch {
		case r.Started:
			res.ByItself++
			if r.TailCut {
				res.TailCuts++
			}
		case r.Refused:
			res.Refused++
			clear, advises := ClearWALRefusal(r.Message, r.File)
			if clear {
				res.Clear++
			} else {
				bad(r, fmt.Sprintf("start error does not name %s and say what is wrong with it: %q", r.File, r.Message))
			}
			if advises {
				res.Advising++
			}
			if r.MovedTo != "" {
				res.OperatorSteps++
			}
			if r.UpAfterMove {
				res.UpAfterMove++
			} else if r.Err == "" {
				bad(r, "did not come up after the operator moved its WAL file aside")
			}
		case r.Err == "":
			bad(r, "neither started nor refused")
		}
	}
	return res
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Summary says in one line what happened, for the fault window's note.
func (r WALRestart) Summary() string {
	msg := r.Message
	if i := strings.Index(msg, `err="`); i >= 0 {
		msg = strings.TrimSuffix(msg[i+len(`err="`):], `"`)
	}
	var s string
	switch {
	case r.Started && r.TailCut:
		s = "restarted: up by itself (memstore cut the corrupt tail of its WAL)"
	case r.Started:
		s = "restarted: up by itself (the damage missed every record and page it reads)"
	case r.Refused:
		s = "restarted: refused to start: " + msg
		if r.MovedTo != "" {
			s += fmt.Sprintf("; operator step: moved %s to %s and started %s again", r.File, r.MovedTo, r.Member)
			if r.UpAfterMove {
				s += ": up with an empty WAL"
			}
		}
	default:
		s = "restarted"
	}
	if r.Err != "" {
		s += "; error: " + r.Err
	}
	return s
}
