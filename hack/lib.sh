# Shared by the provisioning scripts (source it; it defines functions and SUDO, runs nothing):
#   log MESSAGE                 one line on stderr, prefixed with the script's name
#   apt_install PACKAGE...      install what is not installed yet, never starting packaged services
#   disable_service NAME        stop and disable a packaged service the install may have enabled
# Package scripts are kept from starting services during the install with the standard policy-rc.d hook
# (only if no policy is in place, removed afterwards): our tests start their own containerd, Prometheus, ...
# with their own sockets and ports.

PROG_NAME="$(basename "$0" .sh)"
log() { printf '%s: %s\n' "$PROG_NAME" "$*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { log "need root or passwordless sudo for apt-get"; exit 1; }
  SUDO="sudo -n"
fi

apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    own_policy=1
  fi
  log "apt-get install ${missing[*]}"
  local status=0
  { $SUDO apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  } || status=$?
  if [ "$own_policy" = 1 ]; then $SUDO rm -f "$policy"; fi
  return "$status"
}

disable_service() {
  if command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable "$1.service" >/dev/null 2>&1 || true
    if [ -d /run/systemd/system ]; then $SUDO systemctl stop "$1.service" >/dev/null 2>&1 || true; fi
  fi
  $SUDO rm -f "/etc/systemd/system/multi-user.target.wants/$1.service"
  if command -v update-rc.d >/dev/null 2>&1 && [ -e "/etc/init.d/$1" ]; then
    $SUDO update-rc.d "$1" disable >/dev/null 2>&1 || true
    $SUDO "/etc/init.d/$1" stop >/dev/null 2>&1 || true
  fi
}
