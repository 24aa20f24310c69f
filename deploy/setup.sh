#!/usr/bin/env bash
# Install everything opsagent's demo and tests need on a fresh Debian machine, idempotently:
# Debian packages (Prometheus, Alertmanager, Postgres, Chromium for the report screenshot test), uv, the
# Python environment, the LLM tests' protocol
# stand-in (npm), and the sandbox's control plane built from the upstream Go modules into
# ~/.cache/opsagent (outside the repo).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need_apt+=(prometheus-alertmanager)
# Postgres: the production store; tests start a throwaway cluster from these binaries.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# Headless Chromium: the HTML cost report's screenshot test opens the report in it.
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
else
  say "Debian packages present (prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}'), alertmanager, postgres)"
fi

if ! command -v uv >/dev/null; then
  say "installing uv from PyPI"
  python3 -m pip install --quiet uv || python3 -m pip install --quiet --user uv
  export PATH="$HOME/.local/bin:$PATH"
fi
say "syncing the Python environment (uv $(uv --version | awk '{print $2}'))"
uv sync --all-extras --frozen

if [ ! -d tests/llm/node_modules ]; then
  command -v npm >/dev/null || { echo "npm is required for the LLM reasoner's tests (Node 20.15+)" >&2; exit 1; }
  say "installing the LLM protocol stand-in for tests (npm ci in tests/llm)"
  npm ci --prefix tests/llm --no-audit --no-fund
else
  say "LLM protocol stand-in present (tests/llm/node_modules)"
fi

say "building the sandbox control plane and Helm from Go modules (cached after the first run)"
command -v go >/dev/null || { echo "go is required to build the sandbox (Go 1.24+)" >&2; exit 1; }
bash deploy/sandbox/build-components.sh
say "setup complete"
