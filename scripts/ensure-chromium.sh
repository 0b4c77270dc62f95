#!/usr/bin/env bash
# Makes sure Debian's chromium is at /usr/bin/chromium for the browser tests (the OPFS adapter's
# conformance run in headless Chromium, driven by playwright-core). Installs it with apt-get when
# it is missing and we are root. When it cannot be had, says so: outside CI it exits 0 and the
# browser tests skip loudly; under CI=true it exits 1. Never downloads a browser build of its own
# (no `playwright install`).
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  exit 0
fi

in_ci() { [ -n "${CI:-}" ] && [ "${CI}" != "false" ] && [ "${CI}" != "0" ]; }

missing() {
  echo "!!! $CHROMIUM is missing: $1" >&2
  if in_ci; then
    echo "!!! CI=true: the browser tests cannot run without it." >&2
    exit 1
  fi
  echo "!!! Browser tests will be skipped. Install Debian's chromium (apt-get install chromium)." >&2
  exit 0
}

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  missing "it cannot be installed here (not root, or no apt-get)"
fi

echo "==> installing chromium (headless browser tests) with apt-get"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
  missing "apt-get install chromium failed"
fi
[ -x "$CHROMIUM" ] || missing "apt-get installed chromium, but not at $CHROMIUM"
"$CHROMIUM" --version 2>/dev/null || true
