#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian machine (run as root): the apt packages the
# test bed, tests and benchmarks use, and deno pinned from the npm registry into
# .tools/. Fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

DENO_VERSION=2.9.6
ASC_VERSION=0.28.20
APT_PACKAGES=(
  debootstrap openssh-server openssh-client busybox-static iproute2 procps psmisc file
  fuse3 libfuse3-dev pkg-config gcc binutils make git attr fio python3 lua5.4 ffmpeg tmux
  distcc
)

if [ "$(id -u)" != 0 ]; then
  echo "setup: must run as root (the test bed makes namespaces, mounts and veths)" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  # openssh-server must not start a system sshd here: the test bed runs its own.
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

# One npm call for all pinned tools: npm prunes what a later call does not name. No
# lock file is written (it would record the registry's address).
deno=.tools/node_modules/.bin/deno
asc=.tools/node_modules/.bin/asc
if ! { [ -x "$deno" ] && "$deno" --version 2>/dev/null | grep -q "^deno $DENO_VERSION " &&
  [ -x "$asc" ] && [ "$("$asc" --version 2>/dev/null)" = "Version $ASC_VERSION" ]; }; then
  echo "setup: installing deno $DENO_VERSION and assemblyscript $ASC_VERSION from the npm registry" >&2
  mkdir -p .tools
  npm install --no-save --no-package-lock --no-audit --no-fund --loglevel=error --prefix .tools \
    "deno@$DENO_VERSION" "assemblyscript@$ASC_VERSION" >/dev/null
fi
"$deno" --version | head -1 >&2
# npm: packages named in deno.json, fetched once so later runs work offline.
"$deno" install --quiet >/dev/null
