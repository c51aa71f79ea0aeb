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

# TLS=1: mutual TLS on the cluster plane (Raft, gRPC, ringctl) with certificates made by
# `ringctl tls` under $DATA/certs (kept across runs; delete the directory for new ones).
TLS=${TLS:-0}
CERTS="$DATA/certs"
tls_flags() { :; }
RINGCTL="bin/ringctl"
if [ "$TLS" = 1 ]; then
  [ -f "$CERTS/ca.crt" ] || bin/ringctl tls ca -dir "$CERTS" >/dev/null || exit 1
  for n in 1 2 3; do
    [ -f "$CERTS/ingester-$n.crt" ] || bin/ringctl tls node "ingester-$n" -dir "$CERTS" >/dev/null || exit 1
  done
  [ -f "$CERTS/operator.crt" ] || bin/ringctl tls operator -dir "$CERTS" >/dev/null || exit 1
  tls_flags() { echo -tls.cert-path "$CERTS/ingester-$1.crt" -tls.key-path "$CERTS/ingester-$1.key" -tls.ca-path "$CERTS/ca.crt"; }
  RINGCTL="RINGCTL_TLS_CERT_PATH=$CERTS/operator.crt RINGCTL_TLS_KEY_PATH=$CERTS/operator.key RINGCTL_TLS_CA_PATH=$CERTS/ca.crt bin/ringctl"
fi

pids=()
tails=()
start() { # start N EXTRA_FLAGS...
  local n=$1; shift
  local log="$DATA/ingester-$n.log"
  : >"$log"
  setsid bin/ingester -node.id "ingester-$n" -data.dir "$DATA/ingester-$n" \
    -raft.addr "127.0.0.1:919$n" -grpc.addr "127.0.0.1:909$n" -http.addr "127.0.0.1:808$n" \
    -admin.http-addr "127.0.0.1:907$n" \
    -ingester.join-after 2s -ingester.max-transfer-retries 3 $(tls_flags "$n") "$@" >>"$log" 2>&1 </dev/null &
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

raftingest: 3 ingesters on 127.0.0.1 (logs in $DATA/ingester-N.log)$([ "$TLS" = 1 ] && printf '\n  mutual TLS on Raft and gRPC: certificates in %s (HTTP stays plain)' "$CERTS")
  ring page:   http://127.0.0.1:8081/ring   (also :8082, :8083)
  metrics:     http://127.0.0.1:8081/metrics
  remote-write http://127.0.0.1:8081/api/v1/push
  PromQL       http://127.0.0.1:8081/prometheus   (Grafana data source URL)
  look at it:  $RINGCTL -addr 127.0.0.1:9091 ring
               $RINGCTL -addr 127.0.0.1:9091 status
  admin:       http://127.0.0.1:9071/debug/pprof/   (also :9072, :9073; ingester-N on :907N)
               curl -X POST http://127.0.0.1:9071/ingester/flush      flush to $DATA/ingester-1/blocks
               curl -X POST http://127.0.0.1:9073/ingester/shutdown   ingester-3 leaves the ring
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
