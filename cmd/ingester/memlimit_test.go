package main

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

func TestDecideMemoryLimit(t *testing.T) {
	const gib = 1 << 30
	ratio09 := 0.9
	for _, tc := range []struct {
		name      string
		ratio     float64
		env       string
		cg        uint64
		cgErr     error
		wantLimit int64
		wantWhy   string
	}{
		{"ratio of the cgroup limit", 0.9, "", 4 * gib, nil, int64(4 * gib * ratio09), "-runtime.memory-limit-ratio=0.9"},
		{"whole cgroup limit", 1, "", 2 * gib, nil, 2 * gib, "of the cgroup's memory limit of 2147483648 bytes"},
		{"GOMEMLIMIT wins over the cgroup", 0.9, "3GiB", 4 * gib, nil, 0, "GOMEMLIMIT environment variable 3GiB"},
		{"GOMEMLIMIT wins with ratio 0", 0, "off", 0, nil, 0, "GOMEMLIMIT environment variable off"},
		{"ratio 0 disables", 0, "", 4 * gib, nil, 0, "-runtime.memory-limit-ratio=0"},
		{"no cgroup limit", 0.9, "", 0, memlimit.ErrNoLimit, 0, "no memory limit"},
		{"wrapped no limit", 0.9, "", 0, errors.Join(errors.New("x"), memlimit.ErrNoLimit), 0, "no memory limit"},
		{"no cgroup", 0.9, "", 0, memlimit.ErrNoCgroup, 0, "no cgroup memory limit found"},
		{"zero limit read", 0.9, "", 0, nil, 0, "no memory limit"},
		{"cgroup v1 unlimited", 1, "", math.MaxUint64, nil, 0, "no memory limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decideMemoryLimit(tc.ratio, tc.env, tc.cg, tc.cgErr)
			if d.Limit != tc.wantLimit {
				t.Errorf("limit %d, want %d", d.Limit, tc.wantLimit)
			}
			if !strings.Contains(d.Why, tc.wantWhy) {
				t.Errorf("why %q, want it to contain %q", d.Why, tc.wantWhy)
			}
		})
	}
}

func TestDecideGOGC(t *testing.T) {
	for _, tc := range []struct {
		flag    int
		env     string
		want    int
		wantWhy string
	}{
		{50, "", 50, "-runtime.gogc=50"},
		{200, "", 200, "-runtime.gogc=200"},
		{50, "100", 0, "GOGC environment variable 100"},
		{50, "off", 0, "GOGC environment variable off"},
		{0, "", 0, "-runtime.gogc=0"},
	} {
		got, why := decideGOGC(tc.flag, tc.env)
		if got != tc.want || !strings.Contains(why, tc.wantWhy) {
			t.Errorf("decideGOGC(%d, %q) = %d, %q; want %d, naming %q", tc.flag, tc.env, got, why, tc.want, tc.wantWhy)
		}
	}
}
