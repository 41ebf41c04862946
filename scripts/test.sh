#!/usr/bin/env bash
# Run the project's checks: format, lint, types on the core, and the full test suite.
# Creates .venv on first use and (re)installs only when the pinned inputs change.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv
ensure_chromium
ensure_pm2
echo "== ruff format"
# CI only checks (a fresh clone must already be formatted); a developer's run formats in place.
if [[ "${CI:-}" == "true" ]]; then .venv/bin/ruff format --check .; else .venv/bin/ruff format .; fi
echo "== ruff check"
.venv/bin/ruff check .
echo "== mypy (core packages and entry points)"
.venv/bin/mypy eval validator api miner.py
echo "== pytest"
# Tiny models gain nothing from intra-op threads, and the end-to-end tests run
# several torch processes at once: one thread each avoids oversubscribing the cores.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
.venv/bin/python -m pytest "$@"
