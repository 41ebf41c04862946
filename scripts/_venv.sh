# Shared by scripts/test.sh, scripts/demo.sh and scripts/run_pod.sh: create and fill .venv idempotently.
# torch is pinned to 2.13.0 so pip takes the CPU wheel instead of several GB of CUDA.
#
#   ensure_venv [EXTRA]   klhill with one optional extra: dev (default) or gpu (the pod).
# Each extra installs once per content of pyproject.toml + constraints.txt (its own stamp file
# in .venv), so a restart under PM2 or systemd never runs pip again.
ensure_venv() {
  local extra="${1:-dev}"
  local py="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    "$py" -m venv .venv
  fi
  local stamp=".venv/.klhill-installed"
  [ "$extra" = dev ] || stamp="$stamp-$extra"
  local want
  want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "== installing klhill[$extra] and its pinned dependencies (first run takes a few minutes)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input \
    -c constraints.txt "torch==2.13.0"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input \
    -c constraints.txt -e ".[$extra]"
  echo "$want" > "$stamp"
}

# The dashboard test drives headless Chromium. In CI (root, apt available) install
# Debian's package once; elsewhere the test skips with a message saying how.
# A failed attempt is remembered in .venv so later runs stay fast (delete the marker to retry).
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 && return 0
  local tried=".venv/.klhill-chromium-failed"
  [ -f "$tried" ] && return 0
  if [ "${CI:-}" = "true" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium for the dashboard test"
    if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); then
      echo "   chromium could not be installed; the dashboard test will skip (rm $tried to retry)"
      touch "$tried"
    fi
  fi
  return 0
}

# The PM2 tests run the ecosystem file under PM2 itself. In CI (root, npm available) install the
# pinned PM2 from the npm registry once; elsewhere those tests skip with a message saying how.
PM2_VERSION=7.0.4
ensure_pm2() {
  command -v pm2 >/dev/null 2>&1 && return 0
  local tried=".venv/.klhill-pm2-failed"
  [ -f "$tried" ] && return 0
  if [ "${CI:-}" = "true" ] && [ "$(id -u)" = "0" ] && command -v npm >/dev/null 2>&1; then
    echo "== installing pm2@$PM2_VERSION for the PM2 tests"
    if ! npm install -g --silent "pm2@$PM2_VERSION" >/dev/null 2>&1; then
      echo "   pm2 could not be installed; the PM2 tests will skip (rm $tried to retry)"
      touch "$tried"
    fi
  fi
  return 0
}
