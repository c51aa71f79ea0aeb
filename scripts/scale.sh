#!/bin/sh
# make scale: the 1,000-member simulation (faulttest/scale) and the replication-set lookup benchmark on
# the same ring; the last line printed is the figures of issue 16:
#   members=… commit_p99_ms=… snapshot_bytes=… lookup_ns=… ownership_spread=… entries_per_s_100=… entries_per_s_1000=…
# SCALE_MEMBERS sets the ring size (default 1000). TestScale asserts its bounds (commit p99, snapshot,
# spread, flat entry rate, auto-forget: virtual time, so other work on the machine does not move them) and
# a failure exits 1; so does a lookup that allocates. The lookup time is wall-clock time on a shared
# machine: the fastest of 5 benchmark runs is reported against its bound (< 300 ns) as met or missed, with
# the load average, the way make bench reports its targets, and the figures are the last line either way.
set -eu
GO=${GO:-go}
members=${SCALE_MEMBERS:-1000}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
start=$(date +%s)
SCALE_MEMBERS=$members SCALE_RESULT=$out/result $GO test -count=1 -timeout 15m -run '^TestScale$' -v ./faulttest/scale/ >"$out/test.log" 2>&1 || {
	cat "$out/test.log"
	echo "make scale: TestScale failed" >&2
	exit 1
}
grep -E 'entries/s|forgot|members=' "$out/test.log" | sed 's/^ *//'
SCALE_MEMBERS=$members $GO test -count=5 -run '^$' -bench '^BenchmarkScaleLookup$' -benchtime 1s ./faulttest/scale/ >"$out/bench.log" 2>&1 || {
	cat "$out/bench.log"
	echo "make scale: BenchmarkScaleLookup failed" >&2
	exit 1
}
grep '^BenchmarkScaleLookup' "$out/bench.log"
ns=$(awk '/^BenchmarkScaleLookup/ { for (i = 1; i < NF; i++) if ($(i+1) == "ns/op" && (min == "" || $i + 0 < min + 0)) min = $i } END { print min }' "$out/bench.log")
allocs=$(awk '/^BenchmarkScaleLookup/ { for (i = 1; i < NF; i++) if ($(i+1) == "allocs/op" && $i + 0 > most + 0) most = $i } END { print most + 0 }' "$out/bench.log")
echo "wall: $(($(date +%s) - start))s; load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
status=0
if [ "$allocs" != 0 ]; then
	echo "make scale: the lookup makes $allocs allocations, want 0" >&2
	status=1
fi
if awk -v ns="$ns" 'BEGIN { exit !(ns < 300) }'; then
	echo "lookup: $ns ns/op (fastest of 5), bound < 300 ns: met"
else
	echo "lookup: $ns ns/op (fastest of 5), bound < 300 ns: **missed** (wall-clock time; load average $(cut -d' ' -f1 /proc/loadavg) on $(nproc) cores)"
fi
# members=… commit_p99_ms=… snapshot_bytes=…, then lookup_ns, then the rest of the test's line.
sed "s/ ownership_spread=/ lookup_ns=$ns ownership_spread=/" "$out/result"
exit $status
