#!/usr/bin/env bash
# Installs telesfu into ./.venv on a Debian 12 machine with its own python3 (3.11).
#   bash scripts/setup.sh          runtime only
#   bash scripts/setup.sh --test   also what the test suite needs (pip extras, redis-server, chromium,
#                                  firefox-esr, and puppeteer-core from npm in tests/e2e/node to drive it)
# Everything the project needs is installed here; nothing is expected to be there by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
apt_updated=0
apt_install() {
  # apt_install PKG...: installs Debian packages, waiting for another apt run to release its lock.
  if [ "$apt_updated" = 0 ]; then
    for i in $(seq 1 30); do $SUDO apt-get update -qq && break; echo "apt-get update busy, retrying ($i)"; sleep 5; done
    apt_updated=1
  fi
  for i in $(seq 1 30); do
    if DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"; then return 0; fi
    echo "apt-get install $* failed (lock?), retrying ($i)"; sleep 5
  done
  echo "setup.sh: could not install $*" >&2; return 1
}

PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then apt_install python3; fi
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "setup.sh: telesfu needs Python >= 3.11 ($PY is $("$PY" --version 2>&1))" >&2; exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    apt_install python3-venv
    "$PY" -m venv .venv
  fi
fi
echo "==> installing telesfu into .venv"
.venv/bin/python -m pip install -q --upgrade pip
if [ "$want_test" = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi

if [ "$want_test" = 1 ]; then
  command -v redis-server >/dev/null 2>&1 || { echo "==> installing redis-server"; apt_install redis-server; }
  command -v chromium >/dev/null 2>&1 || { echo "==> installing chromium"; apt_install chromium; }
  command -v ip >/dev/null 2>&1 || apt_install iproute2
  command -v firefox-esr >/dev/null 2>&1 || { echo "==> installing firefox-esr"; apt_install firefox-esr; }
  command -v npm >/dev/null 2>&1 || { echo "==> installing nodejs and npm"; apt_install nodejs npm; }
  # the Firefox tests' driver (tests/e2e/firefox_driver.mjs): puppeteer-core at the lockfile's
  # versions, project-local; puppeteer-core downloads no browser (it drives Debian's firefox-esr)
  echo "==> installing puppeteer-core into tests/e2e/node"
  for i in $(seq 1 3); do
    (cd tests/e2e/node && npm ci --no-audit --no-fund --loglevel=error) && break
    echo "npm ci failed, retrying ($i)"; sleep 5
  done
  [ -d tests/e2e/node/node_modules/puppeteer-core ] || { echo "setup.sh: could not install puppeteer-core" >&2; exit 1; }
fi
echo "==> ready: .venv/bin/telesfu"
