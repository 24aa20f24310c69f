# The two commands of the README are `make demo` and `make test`; each does its own set-up.
.PHONY: setup demo test lint unit eval-replay eval-live

# uv may land in ~/.local/bin when setup installs it with `pip --user`.
export PATH := $(HOME)/.local/bin:$(PATH)

setup:
	@bash deploy/setup.sh

demo: setup
	uv run opsagent demo

lint:
	uv run ruff check .
	uv run mypy
	uv run lint-imports

unit:
	uv run pytest tests/unit

test: setup lint
	uv run pytest

# The regression scenarios replayed from evals/recordings (also part of `make test` via tests/evals).
eval-replay:
	uv run opsagent eval --mode replay --tags regression --out .eval/replay

# The whole suite live on a running sandbox (`opsagent sandbox up` first): about a minute or two per scenario.
eval-live:
	uv run opsagent eval --mode live --out .eval/live
