#!/usr/bin/env bash
# Runs a local 3-node raftingest cluster on 127.0.0.1 with data under ./data (make run).
# Ctrl-C makes every node leave the ring gracefully, one after the other, and waits for them.
#
# Each ingester runs in a session of its own (setsid) and logs to a file: a Ctrl-C in the terminal
# then reaches only this script, which sends each node exactly one SIGTERM (a second signal would
# make a node stop without leaving), and a node never dies of a broken log pipe.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-./data}
mkdir -p "$DATA"

pids=()
tails=()
start() { # start N EXTRA_FLAGS...
  local n=$1; shift
  local log="$DATA/ingester-$n.log"
  : >"$log"
  setsid bin/ingester -node.id "ingester-$n" -data.dir "$DATA/ingester-$n" \
    -raft.addr "127.0.0.1:919$n" -grpc.addr "127.0.0.1:909$n" -http.addr "127.0.0.1:808$n" \
    -ingester.join-after 2s "$@" >>"$log" 2>&1 </dev/null &
  pids[$n]=$!
  tail -n +1 -F "$log" 2>/dev/null | sed -u "s/^/[ingester-$n] /" &
  tails+=($!)
}

stop() {
  trap - INT TERM
  echo
  echo "stopping: each node leaves the ring in turn"
  for n in 3 2 1; do
    if kill -0 "${pids[$n]}" 2>/dev/null; then
      kill -TERM "${pids[$n]}" 2>/dev/null || true
      code=0
      wait "${pids[$n]}" 2>/dev/null || code=$?
      echo "ingester-$n exited with status $code"
    fi
  done
  kill "${tails[@]}" 2>/dev/null || true
  exit 0
}
trap stop INT TERM

start 1 -bootstrap
for _ in $(seq 50); do grep -q '"ingester started"\|ingester started' "$DATA/ingester-1.log" && break; sleep 0.1; done
start 2 -join 127.0.0.1:9091
start 3 -join 127.0.0.1:9091

cat <<MSG

raftingest: 3 ingesters on 127.0.0.1 (logs in $DATA/ingester-N.log)
  ring page:   http://127.0.0.1:8081/ring   (also :8082, :8083)
  metrics:     http://127.0.0.1:8081/metrics
  look at it:  bin/ringctl -addr 127.0.0.1:9091 ring
               bin/ringctl -addr 127.0.0.1:9091 status
Ctrl-C stops every node gracefully.

MSG
wait "${pids[@]}"
