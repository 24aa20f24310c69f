# The two commands of the README are `make demo` and `make test`; each does its own set-up.
.PHONY: setup demo test lint unit

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
