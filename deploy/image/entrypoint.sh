#!/bin/sh
# Image entrypoint for `otel-agent run`: point BCC at the image's kernel headers for the kernel
# this container is running on, then exec the command so the agent is PID 1 and receives
# SIGTERM itself (it flushes one last export on it).
#
# Why at start and not at build: scripts/install-system.sh links /lib/modules/$(uname -r)/build,
# but during `docker build` uname -r is the build host's kernel, not the node's. Our BPF
# programs read no kernel structs (DESIGN rule 6), so Debian's generic headers serve any node
# kernel. A node that mounts its own /lib/modules with real headers keeps them.
set -eu

kver=$(uname -r)
mod=/lib/modules/$kver
if [ ! -e "$mod/build/include" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$hdr" ]; then
    echo "entrypoint: no /usr/src/linux-headers-*-amd64 in the image; BPF will not compile" >&2
  elif mkdir -p "$mod" 2>/dev/null && ln -sfn "$hdr" "$mod/build" && ln -sfn "${hdr%-amd64}-common" "$mod/source"; then
    echo "entrypoint: $mod/build -> $hdr" >&2
  else
    echo "entrypoint: cannot write $mod (read-only root filesystem?): mount an emptyDir at /lib/modules" >&2
  fi
fi

exec "$@"
