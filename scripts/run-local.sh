#!/usr/bin/env bash
# Runs a local 3-node raftingest cluster on 127.0.0.1 with data under ./data (make run).
# Ctrl-C makes every node leave the ring gracefully, one after the other, and waits for them; a
# second Ctrl-C stops every node at once (as a crash would: each WAL keeps its node's data).
# When the whole local cluster stops there is no PENDING member to hand data over to, so the nodes
# try only 3 times (-ingester.max-transfer-retries) before flushing to ./data/*/blocks.
#
# Each ingester runs in a session of its own (setsid) and logs to a file: a Ctrl-C in the terminal
# then reaches only this script, which sends each node exactly the signals it means to (a node's
# second signal makes it stop without leaving), and a node never dies of a broken log pipe.
set -uo pipefail
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
    -ingester.join-after 2s -ingester.max-transfer-retries 3 "$@" >>"$log" 2>&1 </dev/null &
  pids[$n]=$!
  tail -n +1 -F "$log" 2>/dev/null | sed -u "s/^/[ingester-$n] /" &
  tails+=($!)
}
alive() { kill -0 "${pids[$1]}" 2>/dev/null; }

# Signals only set flags; the work happens in the main flow below, never inside a trap handler.
stopping=0
leaving=4
on_signal() {
  if [ "$stopping" = 0 ]; then
    stopping=1
    return
  fi
  echo
  echo "stopping at once: every node still running gets its second signal"
  for n in 3 2 1; do
    if [ "$n" -lt "$leaving" ]; then
      kill -TERM "${pids[$n]}" 2>/dev/null # not asked to leave yet: this is its first signal
      sleep 0.2
    fi
    kill -TERM "${pids[$n]}" 2>/dev/null
  done
}
trap on_signal INT TERM

start 1 -bootstrap
for _ in $(seq 50); do grep -q 'ingester started' "$DATA/ingester-1.log" && break; sleep 0.1; done
start 2 -join 127.0.0.1:9091
start 3 -join 127.0.0.1:9091

cat <<MSG

raftingest: 3 ingesters on 127.0.0.1 (logs in $DATA/ingester-N.log)
  ring page:   http://127.0.0.1:8081/ring   (also :8082, :8083)
  metrics:     http://127.0.0.1:8081/metrics
  remote-write http://127.0.0.1:8081/api/v1/push
  PromQL       http://127.0.0.1:8081/prometheus   (Grafana data source URL)
  look at it:  bin/ringctl -addr 127.0.0.1:9091 ring
               bin/ringctl -addr 127.0.0.1:9091 status
Ctrl-C stops every node gracefully (a second Ctrl-C stops them at once).

MSG

# Run until a signal arrives or every node has exited by itself (a bad flag, say).
while [ "$stopping" = 0 ] && { alive 1 || alive 2 || alive 3; }; do
  wait -n "${pids[@]}" 2>/dev/null
done

if [ "$stopping" = 1 ]; then
  echo
  echo "stopping: each node leaves the ring in turn (Ctrl-C again to stop at once)"
fi
for n in 3 2 1; do
  if alive "$n"; then
    leaving=$n
    kill -TERM "${pids[$n]}" 2>/dev/null
  fi
  code=0
  while alive "$n"; do wait "${pids[$n]}"; code=$?; done
  wait "${pids[$n]}" 2>/dev/null && code=0 || code=${code:-$?}
  echo "ingester-$n exited with status $code"
done
kill "${tails[@]}" 2>/dev/null
exit 0
