#!/usr/bin/env bash
# The embedded contest: a whole subnet on this machine (SimChain, pod, validator, API + dashboard).
#   scripts/demo.sh          run the contest, print the leaderboard, keep serving the dashboard until Ctrl-C
#   scripts/demo.sh --once   exit after printing (the store stays at state/demo/validator.db)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# progress is the demo's own lines: no per-file loading bars or kernel-fallback notices from the libraries
export HF_HUB_DISABLE_PROGRESS_BARS="${HF_HUB_DISABLE_PROGRESS_BARS:-1}" TRANSFORMERS_VERBOSITY="${TRANSFORMERS_VERBOSITY:-error}"
exec .venv/bin/python -m scripts.demo "$@"
