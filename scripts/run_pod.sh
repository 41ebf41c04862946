#!/usr/bin/env bash
# Start the GPU pod service in the foreground (PM2 or systemd capture its stdout/stderr).
#
#   KLHILL_POD_ALLOW_HOTKEYS=5F...,5G... scripts/run_pod.sh --port 8091 --workdir /data/pod --max-disk-gb 200
#
# The pod holds no wallet key: it only needs the public ss58 of the validator
# hotkeys it obeys (--allow-hotkey, repeatable, or the env variable above).
# It refuses to start without them. Put it behind a firewall or TLS proxy that
# only the validator host can reach; every job call is btauth/1-signed anyway.
#
# The first start installs klhill with its GPU extra (flash-linear-attention's
# kernels, pinned in constraints.txt) into .venv; later starts (PM2 restarts)
# install nothing unless pyproject.toml or constraints.txt changed. The log's
# "kernels:" line and GET /health say which attention kernels a model will use.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv gpu
export HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec .venv/bin/python -m validator.pod "$@"
