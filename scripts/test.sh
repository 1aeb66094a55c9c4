#!/usr/bin/env bash
# The README's test command: set up, then lint, format check, type check and the test suite.
# Slow tests (full training runs) are left out; run them with `.venv/bin/pytest -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy
.venv/bin/pytest -q "$@"
