#!/usr/bin/env bash
# Build the sandbox's control plane from the upstream Go modules into a version-keyed cache.
#
# Why a script and not `go install`: k8s.io/kubernetes and etcd's server module carry `replace`
# directives, which `go install pkg@version` refuses. So each is built inside a small throwaway
# main module that pins the staging modules to their published versions.
#
# Idempotent: a component whose binaries already sit in the cache is skipped. The cache lives
# outside the repository (default ~/.cache/opsagent) so a fresh clone reuses it.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
KSM_VERSION="${KSM_VERSION:-v2.15.0}"
CACHE="${OPSAGENT_CACHE_DIR:-$HOME/.cache/opsagent}"
BIN="$CACHE/bin"
WORK="$CACHE/build"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$BIN" "$WORK"

# One build at a time per cache: a second run (another checkout, a parallel test job) waits for the
# first and then finds its binaries cached, instead of deleting the build directory under it.
exec 9>"$CACHE/build.lock"
if ! flock -n 9; then
  printf '[build %s] another build holds %s; waiting for it\n' "$(date +%H:%M:%S)" "$CACHE/build.lock"
  flock 9
fi

step() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
have() { for f in "$@"; do [ -x "$f" ] || return 1; done; }

# ---- Kubernetes: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl -------------
k8s_dir="$BIN/kubernetes-$K8S_VERSION"
k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
if have "${k8s_bins[@]/#/$k8s_dir/}"; then
  step "kubernetes $K8S_VERSION: cached in $k8s_dir"
else
  step "kubernetes $K8S_VERSION: preparing build module (staging replaces from its go.mod)"
  mod="$WORK/kubernetes-$K8S_VERSION"
  rm -rf "$mod"; mkdir -p "$mod"; cd "$mod"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  staging_v="v0.${K8S_VERSION#v1.}"
  {
    echo "module opsagent.local/k8sbuild"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/\.[0-9]*$//').0"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" \
      | awk -v v="$staging_v" '{print "replace " $1 " => " $1 " " v}'
  } > go.mod
  step "kubernetes: $(grep -c '^replace' go.mod) staging modules pinned to $staging_v; resolving dependencies"
  go get "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
  for c in "${k8s_bins[@]}"; do go get "k8s.io/kubernetes/cmd/$c@$K8S_VERSION" >/dev/null 2>&1 || true; done
  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$k8s_dir.tmp"
  for c in "${k8s_bins[@]}"; do
    step "kubernetes: go build $c (slow on a cold cache)"
    go build -trimpath -ldflags "$ld" -o "$k8s_dir.tmp/$c" "k8s.io/kubernetes/cmd/$c"
  done
  rm -rf "$k8s_dir"; mv "$k8s_dir.tmp" "$k8s_dir"
  step "kubernetes: $("$k8s_dir/kube-apiserver" --version)"
fi

# ---- etcd -------------------------------------------------------------------------------------
etcd_dir="$BIN/etcd-$ETCD_VERSION"
if have "$etcd_dir/etcd"; then
  step "etcd $ETCD_VERSION: cached"
else
  step "etcd $ETCD_VERSION: building"
  mod="$WORK/etcd-$ETCD_VERSION"; rm -rf "$mod"; mkdir -p "$mod"; cd "$mod"
  cat > main.go <<'GO'
// Command etcd runs the upstream etcd server; it exists only because `go install` refuses
// etcd's server module (it carries replace directives).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  printf 'module opsagent.local/etcdbuild\n\ngo 1.24.0\n' > go.mod
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
  go mod tidy >/dev/null
  mkdir -p "$etcd_dir.tmp"
  go build -trimpath -ldflags "-s -w" -o "$etcd_dir.tmp/etcd" .
  rm -rf "$etcd_dir"; mv "$etcd_dir.tmp" "$etcd_dir"
  step "etcd: $("$etcd_dir/etcd" --version | head -1)"
fi

# ---- KWOK -------------------------------------------------------------------------------------
kwok_dir="$BIN/kwok-$KWOK_VERSION"
if have "$kwok_dir/kwok"; then
  step "kwok $KWOK_VERSION: cached"
else
  step "kwok $KWOK_VERSION: go install"
  GOBIN="$kwok_dir.tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  rm -rf "$kwok_dir"; mv "$kwok_dir.tmp" "$kwok_dir"
fi

# ---- kube-state-metrics -----------------------------------------------------------------------
ksm_dir="$BIN/kube-state-metrics-$KSM_VERSION"
if have "$ksm_dir/kube-state-metrics"; then
  step "kube-state-metrics $KSM_VERSION: cached"
else
  # `go install pkg@version` asks the proxy for the module's version list (deprecation check),
  # which is not served for this module here; building inside a main module that requires it
  # exactly needs only the pinned version, verified against the checksum database.
  step "kube-state-metrics $KSM_VERSION: building"
  mod="$WORK/kube-state-metrics-$KSM_VERSION"; rm -rf "$mod"; mkdir -p "$mod"; cd "$mod"
  printf 'module opsagent.local/ksmbuild\n\ngo 1.24.0\n\nrequire k8s.io/kube-state-metrics/v2 %s\n' "$KSM_VERSION" > go.mod
  mkdir -p "$ksm_dir.tmp"
  go build -trimpath -ldflags "-s -w" -o "$ksm_dir.tmp/kube-state-metrics" k8s.io/kube-state-metrics/v2
  rm -rf "$ksm_dir"; mv "$ksm_dir.tmp" "$ksm_dir"
fi

step "all components in $BIN ($(du -sh "$BIN" | cut -f1) binaries; build cache $(du -sh "$(go env GOCACHE)" 2>/dev/null | cut -f1), modules $(du -sh "$(go env GOMODCACHE)" 2>/dev/null | cut -f1))"
