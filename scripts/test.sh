#!/usr/bin/env bash
# Run the project's checks: lint, types on the core, and the full test suite.
# Creates .venv on first use and (re)installs only when the pinned inputs change.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv
ensure_chromium
echo "== ruff"
.venv/bin/ruff check .
echo "== pytest"
.venv/bin/python -m pytest "$@"
