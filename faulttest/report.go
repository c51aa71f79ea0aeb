// Package faulttest is raftingest's Jepsen-style fault-test harness: workloads that record
// histories, nemeses that break the cluster on a schedule, checkers (package check) that judge the
// histories, and a report per scenario. The simulated tier is in faulttest/sim; the multi-process
// tier (real bin/ingester processes in network namespaces) in faulttest/netns and this package's
// tests. docs/faulttest.md describes how to run and read it.
package faulttest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// FaultWindow is one fault as it happened: when it started and was healed (relative to the start of
// the run), and what it hit.
type FaultWindow struct {
	Kind    string        `json:"kind"`
	Targets []string      `json:"targets,omitempty"`
	Start   time.Duration `json:"start"`
	End     time.Duration `json:"end"` // 0: healed only by the final heal
	Note    string        `json:"note,omitempty"`
}

// Ops counts the workload's operations by outcome.
type Ops struct {
	Attempted int `json:"attempted"`
	Acked     int `json:"acked"`
	Failed    int `json:"failed"`
	Unknown   int `json:"unknown"`
}

// Throughput is acknowledged operations per second before the first fault, while faults were
// active, and after the final heal.
type Throughput struct {
	Before float64 `json:"before"`
	During float64 `json:"during"`
	After  float64 `json:"after"`
}

// Verdict is one checker's result in a report.
type Verdict struct {
	Checker string `json:"checker"`
	Valid   bool   `json:"valid"`
	Summary string `json:"summary"`
	Figures any    `json:"figures,omitempty"`
	// Skipped says why the checker did not run (a feature not built yet), when it did not.
	Skipped string `json:"skipped,omitempty"`
}

// Report is the outcome of one scenario run.
type Report struct {
	Scenario string        `json:"scenario"`
	Tier     string        `json:"tier"` // sim, in-process, process
	Seed     int64         `json:"seed"`
	Duration time.Duration `json:"duration"` // cluster time (virtual in the simulated tier)
	Wall     time.Duration `json:"wall"`
	Faults   []FaultWindow `json:"faults"`
	Ops      Ops           `json:"ops"`
	// Throughput of acknowledged operations.
	Throughput Throughput `json:"throughput"`
	// Elections counts leader changes; Unprovoked those that happened while no fault was active
	// (CPU starvation, timeouts too short for the machine).
	Elections  int       `json:"elections"`
	Unprovoked int       `json:"unprovoked_elections"`
	Verdicts   []Verdict `json:"verdicts"`
	// Kept is the directory holding histories, logs, data and the porcupine page, kept on failure.
	Kept string `json:"kept,omitempty"`
}

// Valid reports whether every checker that ran passed.
func (r *Report) Valid() bool {
	for _, v := range r.Verdicts {
		if v.Skipped == "" && !v.Valid {
			return false
		}
	}
	return true
}

// Add appends a verdict.
func (r *Report) Add(name string, valid bool, summary string, figures any) {
	r.Verdicts = append(r.Verdicts, Verdict{Checker: name, Valid: valid, Summary: summary, Figures: figures})
}

// Skip records a checker that did not run and why.
func (r *Report) Skip(name, why string) {
	r.Verdicts = append(r.Verdicts, Verdict{Checker: name, Skipped: why})
}

// Text renders the report block.
func (r *Report) Text() string {
	var b strings.Builder
	verdict := "PASS"
	if !r.Valid() {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "== %s [%s] seed=%d %s duration=%s wall=%s\n", r.Scenario, r.Tier, r.Seed, verdict,
		r.Duration.Round(time.Millisecond), r.Wall.Round(time.Millisecond))
	fmt.Fprintf(&b, "   faults (%d):", len(r.Faults))
	for i, f := range r.Faults {
		if i == 12 {
			fmt.Fprintf(&b, " ... (+%d)", len(r.Faults)-i)
			break
		}
		end := "final-heal"
		if f.End > 0 {
			end = f.End.Round(time.Millisecond).String()
		}
		fmt.Fprintf(&b, " %s%v[%s..%s]", f.Kind, f.Targets, f.Start.Round(time.Millisecond), end)
	}
	b.WriteByte('\n')
	notes := 0
	for _, f := range r.Faults {
		if f.Note != "" && notes < 6 && (r.Tier != "sim" || strings.Contains(f.Note, "error")) {
			fmt.Fprintf(&b, "     %s%v@%s: %s\n", f.Kind, f.Targets, f.Start.Round(time.Millisecond), f.Note)
			notes++
		}
	}
	fmt.Fprintf(&b, "   ops: attempted=%d acked=%d failed=%d unknown=%d  throughput ok/s: before=%.1f during=%.1f after=%.1f  elections=%d unprovoked=%d\n",
		r.Ops.Attempted, r.Ops.Acked, r.Ops.Failed, r.Ops.Unknown, r.Throughput.Before, r.Throughput.During,
		r.Throughput.After, r.Elections, r.Unprovoked)
	for _, v := range r.Verdicts {
		if v.Skipped != "" {
			fmt.Fprintf(&b, "   %-14s SKIP %s\n", v.Checker, v.Skipped)
			continue
		}
		fmt.Fprintf(&b, "   %-14s %s\n", v.Checker, strings.ReplaceAll(v.Summary, "\n", "\n   "))
	}
	if r.Kept != "" {
		fmt.Fprintf(&b, "   kept: %s\n", r.Kept)
	}
	return b.String()
}

// JSON renders the report as indented JSON.
func (r *Report) JSON() []byte {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return []byte(fmt.Sprintf(`{"error": %q}`, err.Error()))
	}
	return b
}

// KeepDir creates and returns a new directory for the evidence of a failed run, under
// $FAULTTEST_KEEP_DIR when set, else under the system temp dir.
func KeepDir(scenario string, seed int64) (string, error) {
	base := os.Getenv("FAULTTEST_KEEP_DIR")
	if base == "" {
		base = os.TempDir()
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", err
	}
	return os.MkdirTemp(base, fmt.Sprintf("faulttest-%s-%d-", sanitize(scenario), seed))
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// WriteFiles writes the report as report.txt and report.json into dir.
func (r *Report) WriteFiles(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "report.txt"), []byte(r.Text()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.json"), r.JSON(), 0o644)
}

// Seeds returns the seeds to run: the one in $FAULTTEST_SEED (replay) when set, else n seeds drawn
// from the clock, so every run explores new schedules. The seeds are printed by the callers.
func Seeds(n int) ([]int64, error) {
	if s := os.Getenv("FAULTTEST_SEED"); s != "" {
		var seed int64
		if _, err := fmt.Sscan(s, &seed); err != nil {
			return nil, fmt.Errorf("faulttest: FAULTTEST_SEED=%q: %w", s, err)
		}
		return []int64{seed}, nil
	}
	base := time.Now().UnixNano() & (1<<40 - 1)
	out := make([]int64, n)
	for i := range out {
		out[i] = base + int64(i)
	}
	return out, nil
}

// Save writes the report as <scenario>-<seed>.txt and .json into $FAULTTEST_REPORT_DIR when it is
// set (make faulttest sets it), and does nothing otherwise.
func (r *Report) Save() error {
	dir := os.Getenv("FAULTTEST_REPORT_DIR")
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	base := filepath.Join(dir, fmt.Sprintf("%s-%s-%d", r.Tier, sanitize(r.Scenario), r.Seed))
	if err := os.WriteFile(base+".txt", []byte(r.Text()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(base+".json", r.JSON(), 0o644)
}

// MatrixBudget returns how long the matrix of one tier may run: share of $FAULTTEST_DURATION
// (default 10m), and whether the matrix was asked for at all ($FAULTTEST_MATRIX=1, set by make
// faulttest).
func MatrixBudget(share float64) (time.Duration, bool, error) {
	if os.Getenv("FAULTTEST_MATRIX") != "1" {
		return 0, false, nil
	}
	d := 10 * time.Minute
	if s := os.Getenv("FAULTTEST_DURATION"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, false, fmt.Errorf("faulttest: FAULTTEST_DURATION=%q: %w", s, err)
		}
	}
	return time.Duration(float64(d) * share), true, nil
}
