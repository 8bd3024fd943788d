#!/usr/bin/env bash
# Builds, or reuses, the Kubernetes tools the tests run against: kube-apiserver, etcd and kubectl
# (envtest's KUBEBUILDER_ASSETS), kube-controller-manager and kube-scheduler (test/helm installs
# the chart: StatefulSets make pods and claims, pods get scheduled and endpoints), the kubelet
# (test/helm's real node, with Debian's containerd), helm v4 and kwok, all from the Go module
# proxy into one cache directory, and prints that directory on stdout (progress goes to stderr).
#
#   dir="$(scripts/k8s-tools.sh)"; export KUBEBUILDER_ASSETS="$dir" EDGEPORT_K8S_BIN="$dir"
#   scripts/k8s-tools.sh helm kwok        # only these (default: all eight)
#
# The directory is /var/cache/k8s-bins/$K8S_VERSION unless K8S_BIN says otherwise. A tool is
# rebuilt only when its stamp file (.built-<tool>-<version>) is missing, so a machine pays the
# cold build once (kube-apiserver is most of it: ~9-11 min on 2 cores) and ~0 s afterwards.
# Concurrent callers serialise on a lock in that directory.
#
# Why a scratch module for the control plane: `go install k8s.io/kubernetes/cmd/kube-apiserver@v`
# is refused because k8s.io/kubernetes requires its staging repositories as v0.0.0 with
# `replace => ./staging/...`. In a module of our own each staging module is replaced by its
# published twin k8s.io/<x> v0.<minor>.<patch>, and etcd is pinned to the version Kubernetes pins.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
HELM_VERSION="${HELM_VERSION:-v4.3.2}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
K8S_BIN="${K8S_BIN:-/var/cache/k8s-bins/$K8S_VERSION}"
STAGING_VERSION="v0.${K8S_VERSION#v1.}" # v1.37.2 -> v0.37.2

log() { echo "[k8s-tools] $*" >&2; }

WANT=("$@")
[ ${#WANT[@]} -gt 0 ] || WANT=(kube-apiserver etcd kubectl kube-controller-manager kube-scheduler kubelet helm kwok)
for w in "${WANT[@]}"; do
  case "$w" in kube-apiserver | etcd | kubectl | kube-controller-manager | kube-scheduler | kubelet | helm | kwok) ;; *) log "unknown tool $w" && exit 2 ;; esac
done

version_of() {
  case "$1" in helm) echo "$HELM_VERSION" ;; kwok) echo "$KWOK_VERSION" ;; *) echo "$K8S_VERSION" ;; esac
}
wanted() { [[ " ${WANT[*]} " == *" $1 "* ]]; }
have() { [ -x "$K8S_BIN/$1" ] && [ -f "$K8S_BIN/.built-$1-$(version_of "$1")" ]; }

all_present() {
  for w in "${WANT[@]}"; do have "$w" || return 1; done
}

mkdir -p "$K8S_BIN"
if all_present; then
  echo "$K8S_BIN"
  exit 0
fi

exec 9>"$K8S_BIN/.lock"
flock 9
t0=$(date +%s)
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0

# ---- kube-apiserver, etcd, kubectl, kube-controller-manager, kube-scheduler from k8s.io/kubernetes
control_plane=()
for c in kube-apiserver etcd kubectl kube-controller-manager kube-scheduler kubelet; do
  if wanted "$c" && ! have "$c"; then control_plane+=("$c"); fi
done
if [ ${#control_plane[@]} -gt 0 ]; then
  work="${K8S_TOOLS_WORK:-${TMPDIR:-/tmp}/edgeport-k8s-tools-$K8S_VERSION}"
  mkdir -p "$work"
  (
    cd "$work"
    if [ ! -f go.mod ] || ! grep -q "k8s.io/kubernetes $K8S_VERSION" go.mod; then
      rm -f go.mod go.sum
      printf 'module example.invalid/k8stools\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n' "$K8S_VERSION" >go.mod
      kmod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
      {
        echo
        echo "replace ("
        sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$kmod" |
          grep -v -e '^k8s.io/sample-cli-plugin$' -e '^k8s.io/sample-controller$' |
          while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$STAGING_VERSION"; done
        echo ")"
      } >>go.mod
    fi
    pkg_of() { if [ "$1" = etcd ]; then echo go.etcd.io/etcd/server/v3; else echo "k8s.io/kubernetes/cmd/$1"; fi; }
    # etcd at the version k8s.io/kubernetes requires, not the newest (which drags grpc/otel along).
    etcd_version="$(go list -mod=mod -m -f '{{.Version}}' go.etcd.io/etcd/server/v3 2>/dev/null || true)"
    tools=()
    for c in "${control_plane[@]}"; do
      p="$(pkg_of "$c")"
      grep -q "$p\$" go.mod && continue
      if [ "$c" = etcd ]; then tools+=("$p@${etcd_version:-latest}"); else tools+=("$p@$K8S_VERSION"); fi
    done
    if [ ${#tools[@]} -gt 0 ]; then
      go get -tool "${tools[@]}" 2>&1 | grep -v '^go: \(upgraded\|downloading\|added\)' >&2 || true
    fi
    minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
    ldf="-s -w"
    for pfx in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldf="$ldf -X $pfx.gitVersion=$K8S_VERSION -X $pfx.gitMajor=1 -X $pfx.gitMinor=$minor -X $pfx.gitTreeState=clean"
    done
    for c in "${control_plane[@]}"; do
      have "$c" && continue
      t=$(date +%s)
      log "building $c $K8S_VERSION (kube-apiserver takes ~9 min cold on 2 cores)"
      go build -trimpath -ldflags="$ldf" -o "$K8S_BIN/$c.tmp" "$(pkg_of "$c")"
      mv "$K8S_BIN/$c.tmp" "$K8S_BIN/$c"
      touch "$K8S_BIN/.built-$c-$K8S_VERSION"
      log "built $c in $(($(date +%s) - t))s"
    done
  )
fi

# ---- helm and kwok: plain `go install` works (no replace directives in their go.mod) -----------
install_tool() { # name version package
  wanted "$1" || return 0
  have "$1" && return 0
  local t gobin
  t=$(date +%s)
  gobin="$(mktemp -d "$K8S_BIN/.gobin.XXXXXX")"
  log "installing $1 $2"
  GOBIN="$gobin" go install -trimpath -ldflags='-s -w' "$3@$2"
  mv "$gobin/$1" "$K8S_BIN/$1"
  rmdir "$gobin"
  touch "$K8S_BIN/.built-$1-$2"
  log "installed $1 in $(($(date +%s) - t))s"
}
install_tool helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm
install_tool kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok

log "tools ready in $(($(date +%s) - t0))s in $K8S_BIN"
echo "$K8S_BIN"
