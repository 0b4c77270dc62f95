#!/usr/bin/env bash
# The README's test command (`npm test`): installs what is missing, builds, typechecks, runs every
# package's tests (unit, property and differential against qemu), then checks every publishable
# package with publint --strict and attw --pack.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --with-qemu
bash scripts/ensure-chromium.sh

if [ -n "${CI:-}" ] && [ "${CI}" != "false" ] && ! command -v qemu-img >/dev/null 2>&1; then
  echo "CI=true and qemu-img is missing: the differential tests cannot run" >&2
  exit 1
fi

export TURBO_TELEMETRY_DISABLED=1
run() { node_modules/.bin/"$@"; }

echo "==> typecheck"
run turbo run typecheck --output-logs=errors-only

echo "==> tests"
run vitest run "$@"

echo "==> package checks (publint --strict, attw --pack)"
run turbo run lint:package --output-logs=errors-only
