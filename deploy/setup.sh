#!/usr/bin/env bash
# Install everything opsagent's demo and tests need on a fresh Debian machine, idempotently:
# Debian packages (Prometheus, Alertmanager, Postgres, Chromium for the report screenshot test), uv,
# the Python environment, the LLM tests' protocol stand-in (npm), and the sandbox's Go components
# (control plane, etcd, KWOK, kube-state-metrics, Helm) built from the upstream modules into
# ~/.cache/opsagent (outside the repo).
#
# The Go builds take most of a cold run, so they start first, in the background, while the Debian
# packages, uv and npm install; setup waits for them at the end.
#
#   setup.sh [--for demo|test]        install what is missing: everything (test, the default), or
#                                     what `make demo` runs first (no Helm: only the chart tests use it)
#   setup.sh --plan [--assume-empty]  print each step it would take (one line each) and do nothing;
#                                     --assume-empty plans for a machine with nothing installed
set -euo pipefail
cd "$(dirname "$0")/.."

PLAN=0 EMPTY=0 FOR=test
while [ $# -gt 0 ]; do
  arg=$1; shift
  case "$arg" in
    --plan) PLAN=1 ;;
    --assume-empty) EMPTY=1 ;;
    --for) FOR=${1:-}; shift || true ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (try --plan, --assume-empty or --help)" >&2; exit 2 ;;
  esac
done
case "$FOR" in
  test) GO_PARTS=() ;;                                        # every component
  demo) GO_PARTS=(kubernetes etcd kwok kube-state-metrics) ;; # components.SANDBOX_PARTS
  *) echo "setup.sh: --for takes demo or test, not '$FOR'" >&2; exit 2 ;;
esac
[ "$EMPTY" = 0 ] || [ "$PLAN" = 1 ] || { echo "setup.sh: --assume-empty only goes with --plan" >&2; exit 2; }

# What the project runs from Debian: the command it looks for, and the package that provides it.
# deploy/sandbox/components.py and the tests find these commands; tests/unit/test_setup_plan.py
# checks that every one of them is here.
SYSTEM=(
  "prometheus|prometheus"                      # the sandbox's Prometheus
  "promtool|prometheus"                        # backfills the sandbox's history
  "prometheus-alertmanager|prometheus-alertmanager"
  "initdb|postgresql"                          # the production store; tests start throwaway clusters
  "chromium|chromium"                          # the HTML cost report's screenshot test
)
present() {  # present COMMAND
  [ "$EMPTY" = 0 ] || return 1
  case "$1" in
    initdb) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null ;;
    *) command -v "$1" >/dev/null ;;
  esac
}

need_apt=() need_for=()
for entry in "${SYSTEM[@]}"; do
  IFS='|' read -r cmd pkg <<<"$entry"
  present "$cmd" && continue
  need_for+=("$cmd")
  [[ " ${need_apt[*]} " == *" $pkg "* ]] || need_apt+=("$pkg")
done
need_uv=0; { [ "$EMPTY" = 0 ] && command -v uv >/dev/null; } || need_uv=1
need_npm=0; { [ "$EMPTY" = 0 ] && [ -d tests/llm/node_modules ]; } || need_npm=1

if [ "$PLAN" = 1 ]; then
  for entry in "${SYSTEM[@]}"; do
    IFS='|' read -r cmd pkg <<<"$entry"
    if [[ " ${need_for[*]} " == *" $cmd "* ]]; then echo "apt $pkg for $cmd"; else echo "present $cmd"; fi
  done
  [ "$need_uv" = 1 ] && echo "pip install uv" || echo "present uv"
  echo "uv sync --all-extras --frozen"
  [ "$need_npm" = 1 ] && echo "npm ci tests/llm" || echo "present tests/llm/node_modules"
  if [ "$EMPTY" = 1 ]; then
    empty=$(mktemp -d); OPSAGENT_CACHE_DIR="$empty" bash deploy/sandbox/build-components.sh --plan ${GO_PARTS[@]+"${GO_PARTS[@]}"} | sed 's/^/go /'
    rmdir "$empty"
  else
    bash deploy/sandbox/build-components.sh --plan ${GO_PARTS[@]+"${GO_PARTS[@]}"} | sed 's/^/go /'
  fi
  exit 0
fi

say() { printf '\n==> [setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
t_start=$(date +%s)
timings=()
timed() {  # timed LABEL START: remember how long a step took, for the summary
  timings+=("$1 $(( $(date +%s) - $2 )) s")
}

command -v go >/dev/null || { echo "go is required to build the sandbox (Go 1.24+): https://go.dev/dl/" >&2; exit 1; }
say "building the sandbox's Go components in the background (control plane, etcd, KWOK, kube-state-metrics, Helm; cached after the first run)"
t_go=$(date +%s)
bash deploy/sandbox/build-components.sh ${GO_PARTS[@]+"${GO_PARTS[@]}"} &
go_pid=$!
# If setup fails before it waits for the build, stop the build too (by its PID) rather than leave it.
trap 'kill "$go_pid" 2>/dev/null || true' EXIT

t=$(date +%s)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_apt[*]} (for ${need_for[*]})"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  timed "Debian packages" "$t"
else
  say "Debian packages present (prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}'), alertmanager, postgres, chromium)"
fi

t=$(date +%s)
if [ "$need_uv" = 1 ]; then
  say "installing uv from PyPI"
  python3 -m pip install --quiet uv || python3 -m pip install --quiet --user uv
  export PATH="$HOME/.local/bin:$PATH"
  command -v pyenv >/dev/null && pyenv rehash 2>/dev/null || true
  command -v uv >/dev/null || uv() { python3 -m uv "$@"; }
  timed "uv" "$t"
fi
t=$(date +%s)
say "syncing the Python environment (uv $(uv --version | awk '{print $2}'))"
uv sync --all-extras --frozen
timed "Python environment" "$t"

t=$(date +%s)
if [ "$need_npm" = 1 ]; then
  command -v npm >/dev/null || { echo "npm is required for the LLM reasoner's tests (Node 20.15+)" >&2; exit 1; }
  say "installing the LLM protocol stand-in for tests (npm ci in tests/llm)"
  npm ci --prefix tests/llm --no-audit --no-fund
  timed "npm stand-in" "$t"
else
  say "LLM protocol stand-in present (tests/llm/node_modules)"
fi

say "waiting for the Go builds"
wait "$go_pid" || { trap - EXIT; echo "setup: the Go build failed (its lines above say where)" >&2; exit 1; }
trap - EXIT
timed "Go components (in the background from the start)" "$t_go"
say "setup complete in $(( $(date +%s) - t_start )) s: ${timings[*]:+$(IFS=';'; echo "${timings[*]}")}"
