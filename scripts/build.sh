#!/bin/sh
# Builds the edgeport binary as a release is built: the version it reports
# (edgeport --version, the "edgeport started" log line, /statusz) is
# `git describe` of the checkout, never "(devel)".
#   scripts/build.sh [OUTPUT]   (default ./edgeport)
set -eu
cd "$(dirname "$0")/.."
out=${1:-edgeport}
version=$(git describe --tags --always --dirty)
exec go build -ldflags "-X github.com/edgeport/edgeport/internal/cli.Version=$version" -o "$out" ./cmd/edgeport
