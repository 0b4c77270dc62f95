#!/usr/bin/env bash
# Makes sure Debian's chromium is at /usr/bin/chromium for the browser tests (the OPFS adapter's
# conformance run in headless Chromium, driven by playwright-core). Installs it with apt-get when
# it is missing and we are root; otherwise says so and exits 0: the browser tests then skip
# loudly, or fail under CI=true. Never downloads a browser build of its own (no `playwright install`).
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing chromium (headless browser tests) with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
  if [ ! -x "$CHROMIUM" ]; then
    echo "!!! apt-get installed chromium but $CHROMIUM is missing." >&2
    exit 1
  fi
  "$CHROMIUM" --version || true
else
  echo "!!! $CHROMIUM is missing and cannot be installed here (not root or no apt-get)." >&2
  echo "!!! Browser tests will be skipped (or fail under CI=true). Install Debian's chromium." >&2
fi
