#!/usr/bin/env bash
# Runs a local 3-node raftingest cluster on 127.0.0.1 with data under ./data (make run).
# Ctrl-C makes every node leave the ring gracefully, one after the other, and waits for them; a
# second Ctrl-C stops every node at once (as a crash would: each WAL keeps its node's data).
# When the whole local cluster stops there is no PENDING member to hand data over to, so the nodes
# try only 3 times (-ingester.max-transfer-retries) before flushing to ./data/*/blocks (S3=1: the S3 bucket).
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

# Every port the three nodes use must be free: a cluster already running (this one from another
# terminal, or the README's by-hand one, which uses the same ports) would otherwise take the new
# nodes into it, or make them exit at once.
for n in 1 2 3; do
  for port in "919$n" "909$n" "808$n" "907$n"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "127.0.0.1:$port is taken: another cluster is probably running (make run, or the README's by-hand nodes use ports 9191-9193, 9091-9093, 8081-8083, 9071-9073); stop it first" >&2
      exit 1
    fi
  done
done

# S3=1: the blocks go to a real S3 server instead of each node's ./data/ingester-N/blocks: Versity
# Gateway (bin/tools/versitygw, installed by make run) on 127.0.0.1:$S3_PORT serving the bucket
# "blocks" from $DATA/s3 (object K of the bucket is the file $DATA/s3/blocks/K). The bucket is
# shared, as S3 is: every node flushes into it and every querier reads it. The secret access key is
# made once into $DATA/s3-secret and given to the nodes by file, so no process listing shows it.
S3=${S3:-0}
S3_PORT=${S3_PORT:-9000}
s3_flags() { :; }
s3_pid=
if [ "$S3" = 1 ]; then
  vgw=bin/tools/versitygw
  [ -x "$vgw" ] || vgw=$(command -v versitygw) || { echo "versitygw not found: make bin/tools/versitygw installs it" >&2; exit 1; }
  if (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null; then
    echo "127.0.0.1:$S3_PORT is taken: stop what listens there, or choose another port with S3_PORT=" >&2
    exit 1
  fi
  mkdir -p "$DATA/s3"
  if [ ! -s "$DATA/s3-secret" ]; then
    (umask 077; head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DATA/s3-secret")
  fi
  S3_KEY=raftingest
  S3_SECRET=$(cat "$DATA/s3-secret")
  ROOT_ACCESS_KEY_ID=$S3_KEY ROOT_SECRET_ACCESS_KEY=$S3_SECRET setsid "$vgw" --port "127.0.0.1:$S3_PORT" --quiet \
    posix "$DATA/s3" >"$DATA/versitygw.log" 2>&1 </dev/null &
  s3_pid=$!
  # curl signs the requests (SigV4); its -K config, read from a pipe, keeps the keys off its command line.
  s3_curl() { printf 'user = "%s:%s"\n' "$S3_KEY" "$S3_SECRET" | curl -sS -K - -o /dev/null -w '%{http_code}' \
    --aws-sigv4 "aws:amz:us-east-1:s3" -H "x-amz-content-sha256: $(printf '' | sha256sum | cut -d' ' -f1)" "$@"; }
  for _ in $(seq 100); do
    code=$(s3_curl -I "http://127.0.0.1:$S3_PORT/blocks" 2>/dev/null) && [ "$code" != 000 ] && break
    kill -0 "$s3_pid" 2>/dev/null || { echo "versitygw exited:" >&2; cat "$DATA/versitygw.log" >&2; exit 1; }
    sleep 0.1
  done
  if [ "$code" != 200 ]; then
    code=$(s3_curl -X PUT "http://127.0.0.1:$S3_PORT/blocks")
    [ "$code" = 200 ] || { echo "creating the S3 bucket blocks: HTTP $code (log: $DATA/versitygw.log)" >&2; kill "$s3_pid"; exit 1; }
  fi
  s3_flags() { echo -blocks-storage.backend=s3 -blocks-storage.s3.endpoint="127.0.0.1:$S3_PORT" -blocks-storage.s3.bucket-name=blocks \
    -blocks-storage.s3.region=us-east-1 -blocks-storage.s3.insecure -blocks-storage.s3.access-key-id="$S3_KEY" \
    -blocks-storage.s3.secret-access-key-file="$DATA/s3-secret"; }
fi

pids=()
tails=()
declare -A status # node number -> exit status, once the node has been reaped
start() { # start N EXTRA_FLAGS...
  local n=$1; shift
  local log="$DATA/ingester-$n.log"
  : >"$log"
  setsid bin/ingester -node.id "ingester-$n" -data.dir "$DATA/ingester-$n" \
    -raft.addr "127.0.0.1:919$n" -grpc.addr "127.0.0.1:909$n" -http.addr "127.0.0.1:808$n" \
    -admin.http-addr "127.0.0.1:907$n" \
    -ingester.join-after 2s -ingester.max-transfer-retries 3 $(tls_flags "$n") $(s3_flags) "$@" >>"$log" 2>&1 </dev/null &
  pids[$n]=$!
  tail -n +1 -F "$log" 2>/dev/null | sed -u "s/^/[ingester-$n] /" &
  tails+=($!)
}
alive() { [ -n "${pids[$1]:-}" ] && [ -z "${status[$1]:-}" ] && kill -0 "${pids[$1]}" 2>/dev/null; }
# record PID RC: the exit status of the node whose process PID was reaped.
record() { for n in 1 2 3; do [ "${pids[$n]}" = "$1" ] && status[$n]=$2; done; }
# reap N: waits until node N's process is gone and records its exit status. A wait that a signal
# interrupts returns above 128 with the node still there (even as a zombie, which kill -0 sees):
# wait again.
reap() {
  local n=$1 rc
  while [ -z "${status[$n]:-}" ]; do
    if wait "${pids[$n]}" 2>/dev/null; then rc=0; else rc=$?; fi
    if [ "$rc" = 127 ]; then status[$n]="unknown (already reaped)"; break; fi
    kill -0 "${pids[$n]}" 2>/dev/null || status[$n]=$rc
  done
}

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
    [ -n "${pids[$n]:-}" ] && alive "$n" || continue # not started yet, or gone
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

raftingest: 3 ingesters on 127.0.0.1 (logs in $DATA/ingester-N.log)$([ "$TLS" = 1 ] && printf '\n  mutual TLS on Raft and gRPC: certificates in %s (HTTP stays plain)' "$CERTS")$([ "$S3" = 1 ] && printf '\n  blocks in S3: bucket blocks at http://127.0.0.1:%s (versitygw, files under %s/s3/blocks, key id %s, secret in %s/s3-secret)' "$S3_PORT" "$DATA" "$S3_KEY" "$DATA")
  ring page:   http://127.0.0.1:8081/ring   (also :8082, :8083)
  metrics:     http://127.0.0.1:8081/metrics
  remote-write http://127.0.0.1:8081/api/v1/push
  PromQL       http://127.0.0.1:8081/prometheus   (Grafana data source URL)
  look at it:  $RINGCTL -addr 127.0.0.1:9091 ring
               $RINGCTL -addr 127.0.0.1:9091 status
  admin:       http://127.0.0.1:9071/debug/pprof/   (also :9072, :9073; ingester-N on :907N)
               curl -X POST http://127.0.0.1:9071/ingester/flush      flush to $([ "$S3" = 1 ] && echo "the S3 bucket" || echo "$DATA/ingester-1/blocks")
               curl -X POST http://127.0.0.1:9073/ingester/shutdown   ingester-3 leaves the ring
Ctrl-C stops every node gracefully (a second Ctrl-C stops them at once).

MSG

# Run until a signal arrives or every node has exited by itself (a bad flag, say).
while [ "$stopping" = 0 ] && { alive 1 || alive 2 || alive 3; }; do
  done_pid=
  if wait -n -p done_pid "${pids[@]}" 2>/dev/null; then rc=0; else rc=$?; fi
  [ -n "${done_pid:-}" ] && record "$done_pid" "$rc" # unset when a signal interrupted the wait
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
  reap "$n"
  echo "ingester-$n exited with status ${status[$n]}"
done
# The S3 server goes last: the leaving nodes flush into it.
if [ -n "$s3_pid" ]; then
  kill "$s3_pid" 2>/dev/null
  wait "$s3_pid" 2>/dev/null
  echo "versitygw stopped (the bucket stays in $DATA/s3)"
fi
kill "${tails[@]}" 2>/dev/null
for n in 1 2 3; do
  [ "${status[$n]}" = 0 ] || exit 1 # make run fails when a node did
done
exit 0
