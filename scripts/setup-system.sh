#!/usr/bin/env bash
# Install the Debian packages Strata needs (sandbox runtime, rootfs/image tools,
# Python for the wheel fixtures). Idempotent and fast when everything is
# already present: apt-get (and apt-get update) only run when something is
# missing. Works as root; otherwise uses sudo if available.
set -euo pipefail

PACKAGES=(
  runc
  mmdebstrap
  umoci
  skopeo
  buildah
  podman
  busybox-static
  docker-registry
  attr
  uidmap
  ca-certificates
  python3
  python3-pip
  patchelf
  zstd
  xz-utils
  openssl
  redis-server
  golang-go
  slirp4netns
  nftables
  iproute2
  gcc
  libc6-dev
  git
)

log() { printf 'setup-system: %s\n' "$*"; }

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  log "error: dpkg-query/apt-get not found; this script supports Debian/Ubuntu only" >&2
  exit 1
fi

is_installed() {
  local status
  status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) || return 1
  # "ii " = desired install, currently installed
  [[ "$status" == ii* ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! is_installed "$pkg"; then
    missing+=("$pkg")
  fi
done

# debianSlim bases are built by mmdebstrap --mode=unshare, which maps the chroot to the user's subordinate ids.
ensure_subids() {
  local user file
  user=$(id -un)
  for file in /etc/subuid /etc/subgid; do
    if ! grep -qE "^(${user}|$(id -u)):[0-9]+:[0-9]+$" "$file" 2>/dev/null; then
      if [[ "$(id -u)" -ne 0 ]] && ! command -v sudo >/dev/null 2>&1; then
        log "warning: no subordinate ids for ${user} in ${file}; debianSlim needs them (add ${user}:1500000000:65536)"
        continue
      fi
      echo "${user}:1500000000:65536" | ${SUDO_TEE:-tee} -a "$file" >/dev/null
      log "added ${user}:1500000000:65536 to ${file} (mmdebstrap --mode=unshare)"
    fi
  done
}
if [[ "$(id -u)" -ne 0 ]]; then SUDO_TEE="sudo tee"; fi
ensure_subids

if [[ ${#missing[@]} -eq 0 ]]; then
  log "all ${#PACKAGES[@]} system packages already installed; nothing to do"
  exit 0
fi

log "missing packages: ${missing[*]}"

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -E)
    log "not root; using sudo"
  else
    log "error: must run as root (or have sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive

log "running apt-get update"
"${SUDO[@]}" apt-get update -q

log "installing: ${missing[*]}"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"

still_missing=()
for pkg in "${missing[@]}"; do
  if ! is_installed "$pkg"; then
    still_missing+=("$pkg")
  fi
done
if [[ ${#still_missing[@]} -ne 0 ]]; then
  log "error: still not installed after apt-get: ${still_missing[*]}" >&2
  exit 1
fi

log "installed ${#missing[@]} package(s): ${missing[*]}"
