#!/usr/bin/env bash
# The whole test suite: installs the real test peers it needs (Debian's
# mosquitto, jq, python3-paho-mqtt, python3-pymodbus, prometheus, openssl, chromium, skopeo, containerd, runc and the CNI plugins, MQTT.js, node-opcua and parquet-wasm from npm), checks formatting and
# vet, then runs every Go test with the race detector.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
# bench/cluster.sh (run as a smoke test by test/e2e) reads its results with jq.
command -v jq >/dev/null 2>&1 || need+=(jq)
/usr/bin/python3 -c 'import paho.mqtt.client' >/dev/null 2>&1 || need+=(python3-paho-mqtt)
# pymodbus 3.0 (with the serial modules it imports) is the Modbus connector's
# independent test device.
/usr/bin/python3 -c 'import pymodbus.server' >/dev/null 2>&1 || need+=(python3-pymodbus python3-serial python3-serial-asyncio)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# skopeo reads the container image internal/ociimage writes (an independent
# OCI implementation).
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
# test/helm's TestChartOnRealNode runs a real node: Debian's containerd
# (with ctr), runc and the CNI plugins under the kubelet k8s-tools.sh
# builds; ip makes the node's bridge.
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# dnsmasq is the real node's cluster DNS (the pods' names in a headless Service).
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing test peers: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ! -d test/e2e/node/node_modules/mqtt ]; then
  echo "installing MQTT.js"
  (cd test/e2e/node && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi
# The OPC UA connector's tests start node-opcua 2.182.2 (the last release
# that runs on Node 20) from test/opcua.
if [ ! -d test/opcua/node_modules/node-opcua ]; then
  echo "installing node-opcua"
  (cd test/opcua && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
# Parquet files written from a schema are read back by an independent
# reader: Apache Arrow's Rust parquet crate (parquet-wasm) under Node, in
# test/parquet. (Debian 12 has no python3-pyarrow.)
if [ ! -d test/parquet/node_modules/parquet-wasm ]; then
  echo "installing the Parquet reader (parquet-wasm, apache-arrow)"
  (cd test/parquet && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# The Kubernetes tests run a real kube-apiserver and etcd (envtest),
# kube-controller-manager, kube-scheduler, the kubelet, helm v4 and kwok, built from the Go module proxy into a persistent cache
# (/var/cache/k8s-bins): the first run on a machine pays ~10 min, later
# runs nothing.
k8s_bin="$(scripts/k8s-tools.sh)"
export KUBEBUILDER_ASSETS="$k8s_bin" EDGEPORT_K8S_BIN="$k8s_bin"
# test/helm builds the image (scripts/build-image.sh, both platforms): one
# build here compiles the static amd64 and arm64 packages into the Go
# cache outside the tests' timeout, so the tests only link.
t0=$(date +%s)
image_warm="$(mktemp -d)"
IMAGE=registry.invalid/edgeport VERSION=warm scripts/build-image.sh "$image_warm/image" >/dev/null
rm -rf "$image_warm"
echo "image build (Go cache warm-up): $(($(date +%s) - t0))s"

unformatted=$(gofmt -l cmd internal bench test 2>/dev/null || true)
if [ -n "$unformatted" ]; then
  echo "not gofmt'd:"; echo "$unformatted"; exit 1
fi
go vet ./...
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
# The disk-full tests (internal/store, test/e2e) mount a small tmpfs:
# run this as root, as CI does.
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh must run as root: the disk-full tests mount a small tmpfs" >&2
  exit 1
fi
go test -race -count=1 -timeout 15m -skip '^TestClusterFault' "$@" ./...
# Cluster mode's fault tests (issue 18): three serve --cluster processes
# each, one node killed, restarted, frozen or cut off with iptables (root)
# under load. A step of their own, one at a time, with their own limit.
go test -race -count=1 -timeout 12m -run '^TestClusterFault' ./test/e2e
