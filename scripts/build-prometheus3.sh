#!/usr/bin/env bash
# Builds Prometheus 3 (cmd/prometheus) from the github.com/prometheus/prometheus module at the version
# go.mod requires, into the path given ($1): the remote-write 2.0 client of the end-to-end tests.
# `go install …/cmd/prometheus@version` refuses the module (its go.mod has replace directives), so
# the module's source is copied out of the module cache and built as a main module of its own. The
# web UI's assets are not built in (the tests use the API and remote write only).
set -euo pipefail
out=${1:?usage: build-prometheus3.sh OUTPUT}
go=${GO:-go}
mod=github.com/prometheus/prometheus
ver=$($go list -m -f '{{.Version}}' "$mod")
$go mod download "$mod@$ver"
src=$($go list -m -f '{{.Dir}}' "$mod")
# A stable directory next to the binary (bin/tools/.src, not a fresh temporary one): the build cache
# keys the module's own packages by their directory, so building the same version again (the
# binary deleted, a new checkout's bin/) reuses the compiled packages instead of taking minutes.
srcdir="$(dirname "$out")/.src/prometheus-$ver"
rm -rf "$srcdir"
mkdir -p "$srcdir"
cp -r "$src"/. "$srcdir"
chmod -R u+w "$srcdir"
# The module's v0.MMM.P tags are Prometheus releases M.MM.P (v0.305.0 is 3.5.0).
IFS=. read -r _ mm patch <<<"${ver%%-*}"
release="$((10#$mm / 100)).$((10#$mm % 100)).$patch"
echo "building Prometheus $release from $mod@$ver into $out (a few minutes, once)"
(cd "$srcdir" && GOFLAGS=-mod=mod $go build -o "$out" \
  -ldflags "-X github.com/prometheus/common/version.Version=$release -X github.com/prometheus/common/version.Branch=$ver" \
  ./cmd/prometheus)
