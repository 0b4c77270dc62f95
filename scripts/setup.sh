#!/usr/bin/env bash
# Installs what the toolkit needs on a machine that has only Node >= 20 and npm:
# pnpm (pinned, through npx), the workspace dependencies from the frozen lockfile, and a build.
# With --with-qemu (the test command passes it) also qemu-utils through apt-get when running as
# root and qemu-img is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PNPM_VERSION=12.4.2
export TURBO_TELEMETRY_DISABLED=1
with_qemu=0
for arg in "$@"; do
  case "$arg" in
    --with-qemu) with_qemu=1 ;;
  esac
done

pnpm() {
  if command -v pnpm >/dev/null 2>&1 && [ "$(command pnpm --version 2>/dev/null)" = "$PNPM_VERSION" ]; then
    command pnpm "$@"
  else
    npx -y "pnpm@$PNPM_VERSION" "$@"
  fi
}

if [ ! -d node_modules/.pnpm ] || [ pnpm-lock.yaml -nt node_modules/.pnpm/lock.yaml ]; then
  echo "==> installing dependencies (pnpm $PNPM_VERSION, frozen lockfile)"
  pnpm install --frozen-lockfile
fi

if [ "$with_qemu" = 1 ] && ! command -v qemu-img >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing qemu-utils (the test oracle) with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq qemu-utils >/dev/null
  else
    echo "!!! qemu-img is missing and cannot be installed here (not root or no apt-get)." >&2
    echo "!!! Tests against qemu will be skipped (or fail under CI=true). Install qemu-utils." >&2
  fi
fi

echo "==> building packages"
pnpm exec turbo run build --output-logs=errors-only
