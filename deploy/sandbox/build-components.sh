#!/usr/bin/env bash
# Build the sandbox's Go components from their upstream modules into a version-keyed cache:
# the Kubernetes control plane and kubectl, etcd, KWOK, kube-state-metrics, Helm, Jaeger and the
# Argo Rollouts controller (with its CRDs, copied from the same module).
#
# Why a script and not `go install`: k8s.io/kubernetes and etcd's server module carry `replace`
# directives, which `go install pkg@version` refuses. So each is built inside a small throwaway
# main module that pins the staging modules to their published versions.
#
# Idempotent: a component whose binaries already sit in the cache is skipped. The cache lives
# outside the repository (default ~/.cache/opsagent) so a fresh clone reuses it.
#
# Three lanes: Kubernetes (most of the work, then Helm) in one, the smaller components one after another
# in the second, the Argo Rollouts controller in the third. On two cores this overlaps module downloads
# and single-threaded links with compiles; what a lane is not asked for (`make demo` names only what the
# sandbox runs) it skips.
#
#   build-components.sh [NAME...]         build what is missing (all components, or the NAMEs:
#                                         kubernetes etcd kwok kube-state-metrics helm jaeger argo-rollouts)
#   build-components.sh --plan [NAME...]  print, one line per component, what a build would produce
#                                         (`build NAME VERSION PATH...` or `cached NAME VERSION PATH...`)
#                                         and build nothing; tests compare it with components.locate()
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
KSM_VERSION="${KSM_VERSION:-v2.15.0}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
# v1.10.2 asks for go >= 1.26.10; v1.10.1 builds with the toolchain setup installs.
ROLLOUTS_VERSION="${ROLLOUTS_VERSION:-v1.10.1}"
JAEGER_VERSION="${JAEGER_VERSION:-v1.75.0}"
CACHE="${OPSAGENT_CACHE_DIR:-$HOME/.cache/opsagent}"
BIN="$CACHE/bin"
WORK="$CACHE/build"

PLAN=0 WANT=()
for arg in "$@"; do
  case "$arg" in
    --plan) PLAN=1 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "build-components.sh: unknown argument '$arg' (try --plan or --help)" >&2; exit 2 ;;
    *) WANT+=("$arg") ;;
  esac
done

# Every component: name, version, install directory and the binaries it must leave there.
# components.py's locate() names the same paths; tests/unit/test_setup_plan.py keeps the two equal.
k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
COMPONENTS=(
  "kubernetes|$K8S_VERSION|$BIN/kubernetes-$K8S_VERSION|${k8s_bins[*]}"
  "etcd|$ETCD_VERSION|$BIN/etcd-$ETCD_VERSION|etcd"
  "kwok|$KWOK_VERSION|$BIN/kwok-$KWOK_VERSION|kwok"
  "kube-state-metrics|$KSM_VERSION|$BIN/kube-state-metrics-$KSM_VERSION|kube-state-metrics"
  "helm|$HELM_VERSION|$BIN/helm-$HELM_VERSION|helm"
  "jaeger|$JAEGER_VERSION|$BIN/jaeger-$JAEGER_VERSION|jaeger-all-in-one"
  "argo-rollouts|$ROLLOUTS_VERSION|$BIN/argo-rollouts-$ROLLOUTS_VERSION|rollouts-controller"
)

component() {  # component NAME -> sets c_version c_dir c_bins
  local entry
  for entry in "${COMPONENTS[@]}"; do
    IFS='|' read -r c_name c_version c_dir c_bins <<<"$entry"
    [ "$c_name" = "$1" ] && return 0
  done
  echo "build-components.sh: no component '$1'" >&2; return 1
}
wanted() {  # wanted NAME: asked for by name, or no names given
  [ ${#WANT[@]} -eq 0 ] && return 0
  local w; for w in "${WANT[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1
}
cached() {  # cached NAME: all of the component's binaries are executable in the cache
  component "$1"
  local b; for b in $c_bins; do [ -x "$c_dir/$b" ] || return 1; done
}

step() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
finish() {  # finish NAME START_SECONDS: move NAME.tmp into place and say how long it took
  component "$1"
  rm -rf "$c_dir"; mv "$c_dir.tmp" "$c_dir"
  step "$1 $c_version: built in $(( $(date +%s) - $2 )) s"
}

build_kubernetes() {
  local t0; t0=$(date +%s)
  component kubernetes
  step "kubernetes $K8S_VERSION: preparing build module (staging replaces from its go.mod)"
  local mod="$WORK/kubernetes-$K8S_VERSION"
  rm -rf "$mod"; mkdir -p "$mod"; cd "$mod"
  local gomod staging_v
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
  local c
  for c in "${k8s_bins[@]}"; do go get "k8s.io/kubernetes/cmd/$c@$K8S_VERSION" >/dev/null 2>&1 || true; done
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ld="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld="$ld -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  rm -rf "$c_dir.tmp"; mkdir -p "$c_dir.tmp"
  # One `go build` for the four commands: their shared packages compile once and the links overlap.
  step "kubernetes: go build ${k8s_bins[*]} (the slow part of a cold cache: ~6 min on 2 cores)"
  go build -trimpath -ldflags "$ld" -o "$c_dir.tmp/" "${k8s_bins[@]/#/k8s.io/kubernetes/cmd/}"
  finish kubernetes "$t0"
  step "kubernetes: $("$c_dir/kube-apiserver" --version)"
}

build_etcd() {
  local t0; t0=$(date +%s)
  component etcd
  step "etcd $ETCD_VERSION: building"
  local mod="$WORK/etcd-$ETCD_VERSION"; rm -rf "$mod"; mkdir -p "$mod"; cd "$mod"
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
  rm -rf "$c_dir.tmp"; mkdir -p "$c_dir.tmp"
  go build -trimpath -ldflags "-s -w" -o "$c_dir.tmp/etcd" .
  finish etcd "$t0"
  step "etcd: $("$c_dir/etcd" --version | head -1)"
}

build_kwok() {
  local t0; t0=$(date +%s)
  component kwok
  step "kwok $KWOK_VERSION: go install"
  rm -rf "$c_dir.tmp"
  GOBIN="$c_dir.tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  finish kwok "$t0"
}

# `go install pkg@version` asks the proxy for the module's version list (deprecation check), which
# is not served for every module here; building inside a main module that requires it exactly needs
# only the pinned version, verified against the checksum database.
build_in_module() {  # build_in_module NAME MODULE PACKAGE BINARY LDFLAGS
  local t0; t0=$(date +%s)
  component "$1"
  step "$1 $c_version: building $3"
  local mod="$WORK/$1-$c_version"; rm -rf "$mod"; mkdir -p "$mod"; cd "$mod"
  printf 'module opsagent.local/%sbuild\n\ngo 1.24.0\n\nrequire %s %s\n' "$1" "$2" "$c_version" > go.mod
  rm -rf "$c_dir.tmp"; mkdir -p "$c_dir.tmp"
  go build -trimpath -ldflags "$5" -o "$c_dir.tmp/$4" "$3"
  finish "$1" "$t0"
}

build_kube_state_metrics() {
  build_in_module kube-state-metrics k8s.io/kube-state-metrics/v2 k8s.io/kube-state-metrics/v2 \
    kube-state-metrics "-s -w"
}

build_helm() {
  # Helm reads its version from these variables (its Makefile sets the same ones).
  build_in_module helm helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm helm \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  step "helm: $("$BIN/helm-$HELM_VERSION/helm" version --short)"
}

build_argo_rollouts() {
  # The module carries replace directives (k8s.io staging pins), so `go install` is refused: build it
  # inside a throwaway main module that repeats them. Its controller binds metrics and healthz to
  # "0.0.0.0:%d", a constant no flag or -X can change, so the build compiles a copy of the module
  # whose one listen address reads 127.0.0.1; the build fails if that line is not found.
  local t0; t0=$(date +%s)
  component argo-rollouts
  step "argo-rollouts $ROLLOUTS_VERSION: preparing build module (its replaces, loopback listen address)"
  local mod="$WORK/argo-rollouts-$ROLLOUTS_VERSION" src
  rm -rf "$mod"; mkdir -p "$mod"; cd "$mod"
  src=$(go mod download -json "github.com/argoproj/argo-rollouts@$ROLLOUTS_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$src" ] || { echo "build-components.sh: argo-rollouts $ROLLOUTS_VERSION not downloaded" >&2; return 1; }
  cp -r "$src" upstream; chmod -R u+w upstream
  grep -q 'listenAddr *= "0.0.0.0:%d"' upstream/controller/controller.go \
    || { echo "build-components.sh: argo-rollouts' listen address moved; update build_argo_rollouts" >&2; return 1; }
  sed -i 's/listenAddr *= "0.0.0.0:%d"/listenAddr = "127.0.0.1:%d"/' upstream/controller/controller.go
  {
    echo "module opsagent.local/rolloutsbuild"
    echo
    echo "go $(sed -n 's/^go //p' upstream/go.mod)"
    echo
    echo "require github.com/argoproj/argo-rollouts $ROLLOUTS_VERSION"
    echo
    echo "replace github.com/argoproj/argo-rollouts => ./upstream"
    sed -n '/^replace (/,/^)/p' upstream/go.mod
  } > go.mod
  cp upstream/go.sum go.sum
  go get "github.com/argoproj/argo-rollouts/cmd/rollouts-controller" >/dev/null 2>&1 || true
  rm -rf "$c_dir.tmp"; mkdir -p "$c_dir.tmp/crds"
  step "argo-rollouts: go build rollouts-controller"
  go build -trimpath -o "$c_dir.tmp/rollouts-controller" \
    -ldflags "-s -w -X github.com/argoproj/argo-rollouts/utils/version.version=${ROLLOUTS_VERSION#v} -X github.com/argoproj/argo-rollouts/utils/version.gitTag=$ROLLOUTS_VERSION -X github.com/argoproj/argo-rollouts/utils/version.gitTreeState=clean" \
    github.com/argoproj/argo-rollouts/cmd/rollouts-controller
  # The CRDs the controller serves, from the same module version (applied by `opsagent sandbox up`).
  cp upstream/manifests/crds/*-crd.yaml "$c_dir.tmp/crds/"
  finish argo-rollouts "$t0"
  step "argo-rollouts: $("$c_dir/rollouts-controller" --version 2>&1 | head -1)"
}

build_jaeger() {
  # Jaeger's all-in-one (collector with OTLP in, query API, in-memory store) for the trace tests.
  # Its go.mod pins sarama with a replace directive, which a requiring module must repeat.
  local t0; t0=$(date +%s)
  component jaeger
  step "jaeger $JAEGER_VERSION: building cmd/all-in-one (~5 min on 2 cores)"
  local mod="$WORK/jaeger-$JAEGER_VERSION"; rm -rf "$mod"; mkdir -p "$mod"; cd "$mod"
  local gomod
  gomod=$(go mod download -json "github.com/jaegertracing/jaeger@$JAEGER_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    printf 'module opsagent.local/jaegerbuild\n\ngo 1.24.6\n\nrequire github.com/jaegertracing/jaeger %s\n\n' "$JAEGER_VERSION"
    grep -E '^replace ' "$gomod"
  } > go.mod
  go get "github.com/jaegertracing/jaeger/cmd/all-in-one@$JAEGER_VERSION" >/dev/null 2>&1 || true
  rm -rf "$c_dir.tmp"; mkdir -p "$c_dir.tmp"
  go build -trimpath -ldflags "-s -w" -o "$c_dir.tmp/jaeger-all-in-one" github.com/jaegertracing/jaeger/cmd/all-in-one
  finish jaeger "$t0"
}

lane() {  # lane NAME... : build each missing component in turn, say which were cached
  local name
  for name in "$@"; do
    wanted "$name" || continue
    if cached "$name"; then step "$name $c_version: cached in $c_dir"; else "build_${name//-/_}"; fi
  done
}

for w in "${WANT[@]}"; do component "$w" >/dev/null || exit 2; done
if [ "$PLAN" = 1 ]; then
  for entry in "${COMPONENTS[@]}"; do
    IFS='|' read -r name version dir bins <<<"$entry"
    wanted "$name" || continue
    declare -F "build_${name//-/_}" >/dev/null || { echo "build-components.sh: no build step for $name" >&2; exit 3; }
    paths=(); for b in $bins; do paths+=("$dir/$b"); done
    if cached "$name"; then verb=cached; else verb=build; fi
    echo "$verb $name $version ${paths[*]}"
  done
  exit 0
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$BIN" "$WORK"

# One build at a time per cache: a second run (another checkout, a parallel test job) waits for the
# first and then finds its binaries cached, instead of deleting the build directory under it.
exec 9>"$CACHE/build.lock"
if ! flock -n 9; then
  printf '[build %s] another build holds %s; waiting for it\n' "$(date +%H:%M:%S)" "$CACHE/build.lock"
  flock 9
fi

t_all=$(date +%s)
( lane kubernetes helm ) & lane_a=$!
( lane etcd kwok kube-state-metrics jaeger ) & lane_b=$!
( lane argo-rollouts ) & lane_c=$!
status=0
wait "$lane_a" || status=$?
wait "$lane_b" || status=$?
wait "$lane_c" || status=$?
if [ "$status" -ne 0 ]; then
  step "a component failed to build (exit $status); see the lines above. Re-running builds only what is missing."
  exit "$status"
fi

step "all components in $BIN after $(( $(date +%s) - t_all )) s ($(du -sh "$BIN" | cut -f1) binaries; build cache $(du -sh "$(go env GOCACHE)" 2>/dev/null | cut -f1), modules $(du -sh "$(go env GOMODCACHE)" 2>/dev/null | cut -f1))"
