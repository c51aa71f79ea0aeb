package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// memoryLimitDecision is what applyMemoryLimit does with the Go runtime's soft memory limit.
type memoryLimitDecision struct {
	// Limit is the limit to set in bytes; 0 leaves the runtime's limit as it is (GOMEMLIMIT from
	// the environment, which the runtime applied at start, or none).
	Limit int64
	// Why says where the limit in effect comes from, for the start-up log.
	Why string
}

// decideMemoryLimit is the pure part of -runtime.memory-limit-ratio: env is the GOMEMLIMIT
// environment variable, and cgroupLimit and cgroupErr are what the cgroup lookup returned
// (memlimit.FromCgroup: ErrNoLimit when the cgroup does not limit memory, ErrNoCgroup or another
// error when there is no cgroup to read). The environment variable wins, as the runtime applied it
// already and an operator who set it means it; ratio 0 turns the derivation off; without a
// cgroup limit there is nothing to derive from (the GC then runs on GOGC alone).
func decideMemoryLimit(ratio float64, env string, cgroupLimit uint64, cgroupErr error) memoryLimitDecision {
	switch {
	case env != "":
		return memoryLimitDecision{Why: "GOMEMLIMIT environment variable " + env + " (-runtime.memory-limit-ratio ignored)"}
	case ratio == 0:
		return memoryLimitDecision{Why: "-runtime.memory-limit-ratio=0: no limit derived"}
	case errors.Is(cgroupErr, memlimit.ErrNoLimit):
		return memoryLimitDecision{Why: "the cgroup sets no memory limit"}
	case cgroupErr != nil:
		return memoryLimitDecision{Why: "no cgroup memory limit found: " + cgroupErr.Error()}
	case cgroupLimit == 0:
		return memoryLimitDecision{Why: "the cgroup sets no memory limit"}
	}
	limit := float64(cgroupLimit) * ratio
	if limit >= math.MaxInt64 {
		return memoryLimitDecision{Why: "the cgroup sets no memory limit"} // cgroup v1 "unlimited"
	}
	return memoryLimitDecision{Limit: int64(limit),
		Why: fmt.Sprintf("-runtime.memory-limit-ratio=%g of the cgroup's memory limit of %d bytes", ratio, cgroupLimit)}
}

// applyMemoryLimit reads the cgroup's memory limit, sets the Go runtime's soft memory limit as
// decideMemoryLimit says and logs the limit in effect (also exported by the Go collector as
// go_gc_gomemlimit_bytes; math.MaxInt64 means none).
func applyMemoryLimit(ratio float64, log *slog.Logger) {
	env := os.Getenv("GOMEMLIMIT")
	var cg uint64
	var cgErr error
	if env == "" && ratio > 0 {
		cg, cgErr = memlimit.FromCgroup()
	}
	d := decideMemoryLimit(ratio, env, cg, cgErr)
	if d.Limit > 0 {
		debug.SetMemoryLimit(d.Limit)
	}
	inEffect := debug.SetMemoryLimit(-1)
	if inEffect == math.MaxInt64 {
		log.Info("go memory limit: none", "why", d.Why)
		return
	}
	log.Info("go memory limit", "bytes", inEffect, "why", d.Why)
}

// decideGOGC is the pure part of -runtime.gogc: env is the GOGC environment variable, which wins
// (the runtime applied it at start, and an operator who set it means it); flag 0 leaves the
// runtime's percentage. It returns the percentage to set (0: none) and why, for the start-up log.
func decideGOGC(flag int, env string) (int, string) {
	switch {
	case env != "":
		return 0, "GOGC environment variable " + env + " (-runtime.gogc ignored)"
	case flag == 0:
		return 0, "-runtime.gogc=0: the runtime's default"
	}
	return flag, fmt.Sprintf("-runtime.gogc=%d", flag)
}

// applyGOGC sets the garbage collector's percentage as decideGOGC says and logs the one in effect.
func applyGOGC(flag int, log *slog.Logger) {
	set, why := decideGOGC(flag, os.Getenv("GOGC"))
	if set > 0 {
		debug.SetGCPercent(set)
	}
	inEffect := debug.SetGCPercent(100)
	debug.SetGCPercent(inEffect)
	log.Info("go gc percent", "gogc", inEffect, "why", why)
}
