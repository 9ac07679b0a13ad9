#!/usr/bin/env bash
# scripts/apt-need.sh PKG... — apt-get install the Debian packages among PKG
# that are not installed yet (nothing, quickly, when all are). Used by the
# test script and the VM image builder, which must work on a fresh machine.
set -euo pipefail
need=()
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
((${#need[@]})) || exit 0
echo "[apt-need] apt-get install ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
