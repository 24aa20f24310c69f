# The two commands of the README are `make demo` and `make test`; each does its own set-up.
.PHONY: setup demo test lint unit eval-replay eval-live

# uv may land in ~/.local/bin when setup installs it with `pip --user`, or beside a pyenv Python whose
# shim is not made yet; `python3 -m uv` reaches it there. Expanded when a recipe runs, after setup.
export PATH := $(HOME)/.local/bin:$(PATH)
UV = $(shell command -v uv 2>/dev/null || echo python3 -m uv)

setup:
	@bash deploy/setup.sh

# The demo's set-up skips what only the tests use (Helm), so a first run shows the drill sooner.
demo:
	@bash deploy/setup.sh --for demo
	$(UV) run opsagent demo

lint:
	$(UV) run ruff check .
	$(UV) run mypy
	$(UV) run lint-imports

unit:
	$(UV) run pytest tests/unit

# Three pytest-xdist workers, whole files each (`loadfile`): the integration files mostly wait on
# Prometheus scrapes, Alertmanager and the controllers, so three sandboxes side by side (one per worker,
# ports OPSAGENT_TEST_PORT_BASE + 2000 × worker) overlap their waits on two cores. TEST_WORKERS=0 runs
# everything in one process, as before.
TEST_WORKERS ?= 3

test: setup lint
	$(UV) run pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# The regression scenarios replayed from evals/recordings (also part of `make test` via tests/evals).
eval-replay:
	$(UV) run opsagent eval --mode replay --tags regression --out .eval/replay

# The whole suite live on a running sandbox (`opsagent sandbox up` first): about a minute or two per scenario.
eval-live:
	$(UV) run opsagent eval --mode live --out .eval/live
