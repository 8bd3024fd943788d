#!/usr/bin/env bash
# Build Edgeport's container image without a container engine or registry:
# static binaries for linux/amd64 and linux/arm64, then a multi-platform OCI
# image (non-root uid 65532, no shell, one layer) written by cmd/ociimage.
# The build is reproducible: the same commit gives the same digest.
#
# Usage: scripts/build-image.sh [out-dir]          (default dist/image)
#        scripts/build-image.sh --check [out-dir]  builds twice, fails unless the digests match
# Env:   IMAGE (default ghcr.io/edgeport/edgeport), VERSION (default git describe),
#        PLATFORMS (default "linux/amd64 linux/arm64"),
#        SOURCE_DATE_EPOCH (default the commit time of HEAD), REVISION (default HEAD's hash),
#        CA_BUNDLE (a PEM bundle to install as /etc/ssl/certs/ca-certificates.crt; default none)
# Output: <out>/oci/ (OCI layout), <out>/image-oci.tar (oci-archive, all platforms),
#         <out>/image-linux-<arch>.docker.tar (per platform: ctr -n k8s.io images import,
#         or copy into /var/lib/rancher/k3s/agent/images/ on a K3s node).
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
OUT="${1:-dist/image}"
IMAGE="${IMAGE:-ghcr.io/edgeport/edgeport}"
VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
PLATFORMS="${PLATFORMS:-linux/amd64 linux/arm64}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
REVISION="${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
export SOURCE_DATE_EPOCH

build() {
  local out="$1" args=()
  mkdir -p "$out/bin"
  for p in $PLATFORMS; do
    local os="${p%/*}" arch="${p#*/}"
    # Static (no cgo), no local paths (-trimpath), no build ID or VCS
    # stamp that would differ between checkouts: the bytes depend only on
    # the source, the Go version and the flags.
    CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" go build -trimpath -buildvcs=false \
      -ldflags="-s -w -buildid= -X github.com/edgeport/edgeport/internal/cli.Version=$VERSION" \
      -o "$out/bin/edgeport-$os-$arch" ./cmd/edgeport
    args+=(--platform "$p=$out/bin/edgeport-$os-$arch")
  done
  go run ./cmd/ociimage --tag "$IMAGE:$VERSION" --out "$out/image" \
    --label "org.opencontainers.image.title=edgeport" \
    --label "org.opencontainers.image.description=Edgeport edge IoT data platform" \
    --label "org.opencontainers.image.source=https://github.com/edgeport/edgeport" \
    --label "org.opencontainers.image.version=$VERSION" \
    --label "org.opencontainers.image.revision=$REVISION" \
    --label "org.opencontainers.image.licenses=Apache-2.0" \
    --label "org.opencontainers.image.created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)" \
    ${CA_BUNDLE:+--ca-bundle "$CA_BUNDLE"} "${args[@]}"
}

if [ "$check" = 1 ]; then
  a="$(mktemp -d)" b="$(mktemp -d)"
  trap 'rm -rf "$a" "$b"' EXIT
  build "$a" | tee "$a/digests"
  # A second build into another directory (CHECK_GOCACHE=dir makes it use
  # a separate, empty Go build cache: slower, and it proves the binaries too).
  GOCACHE="${CHECK_GOCACHE:-$(go env GOCACHE)}" build "$b" >"$b/digests"
  d1="$(head -1 "$a/digests")" d2="$(head -1 "$b/digests")"
  echo "first:  $d1"; echo "second: $d2"
  if [ "$d1" != "$d2" ]; then echo "NOT reproducible" >&2; exit 1; fi
  echo "reproducible: same digest"
  exit 0
fi
rm -rf "$OUT"
build "$OUT.tmp"
mv "$OUT.tmp/image" "$OUT"
rm -rf "$OUT.tmp"
echo "image in $OUT:"; ls -l "$OUT"
