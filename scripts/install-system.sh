#!/usr/bin/env bash
# The one place that installs system packages. `make` (test, demo, bench) and the Dockerfile
# both call it, so what the tests prove is what the image ships.
#
#   scripts/install-system.sh            runtime: BCC from Debian + generic kernel headers
#   scripts/install-system.sh --dev      + what the test tiers need (venv, capsh, chromium,
#                                          Prometheus 2.42 for the dashboard tests)
#
# Idempotent: a second run installs nothing and only re-checks the header links.
set -euo pipefail

dev=0
[ "${1:-}" = "--dev" ] && dev=1

runtime_pkgs=(python3 python3-venv python3-bpfcc linux-headers-amd64 libcap2-bin)
dev_pkgs=(chromium iproute2 procps openssl prometheus)

want=("${runtime_pkgs[@]}")
[ $dev -eq 1 ] && want+=("${dev_pkgs[@]}")

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-system: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Never the PyPI package called bcc: that is an unrelated lattice library.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# BCC compiles against kernel headers. Our programs read no kernel structs (DESIGN rule 6), so
# Debian's generic headers work for any recent kernel: point /lib/modules/$(uname -r) at them
# unless the node already has its own.
kver=$(uname -r)
mod=/lib/modules/$kver
if [ ! -e "$mod/build/include" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$hdr" ]; then
    echo "install-system: no /usr/src/linux-headers-*-amd64 after install" >&2
    exit 1
  fi
  common=${hdr%-amd64}-common
  mkdir -p "$mod"
  ln -sfn "$hdr" "$mod/build"
  ln -sfn "$common" "$mod/source"
  echo "install-system: $mod/build -> $hdr"
fi
