#!/usr/bin/env bash
# Runs a local 3-node raftingest cluster on 127.0.0.1 with data under ./data (make run).
# Ctrl-C makes every node leave the ring gracefully, one after the other, and waits for them.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-./data}
mkdir -p "$DATA"

pids=()
start() { # start N EXTRA_FLAGS...
  local n=$1; shift
  bin/ingester -node.id "ingester-$n" -data.dir "$DATA/ingester-$n" \
    -raft.addr "127.0.0.1:919$n" -grpc.addr "127.0.0.1:909$n" -http.addr "127.0.0.1:808$n" \
    -ingester.join-after 2s "$@" > >(sed -u "s/^/[ingester-$n] /") 2>&1 &
  pids[$n]=$!
}

start 1 -bootstrap
sleep 1
start 2 -join 127.0.0.1:9091
start 3 -join 127.0.0.1:9091

stop() {
  trap - INT TERM
  echo
  echo "stopping: each node leaves the ring in turn"
  for n in 3 2 1; do
    if kill -0 "${pids[$n]}" 2>/dev/null; then
      kill -TERM "${pids[$n]}" 2>/dev/null || true
      wait "${pids[$n]}" 2>/dev/null || true
    fi
  done
  exit 0
}
trap stop INT TERM

cat <<MSG

raftingest: 3 ingesters on 127.0.0.1
  ring page:   http://127.0.0.1:8081/ring   (also :8082, :8083)
  metrics:     http://127.0.0.1:8081/metrics
  look at it:  bin/ringctl -addr 127.0.0.1:9091 ring
               bin/ringctl -addr 127.0.0.1:9091 status
Ctrl-C stops every node gracefully.

MSG
wait
