#!/usr/bin/env bash
# Installs what the local test hosts need on a Debian controller: debootstrap
# and systemd-nspawn to make and boot them, an SSH client to reach them, wrk
# for the benchmarks, redis-server for the unit tests of the shared tracker
# (they start their own on a Unix socket; the packaged service is stopped, so
# that it never holds a port the test hosts want) and geoip-database for the
# unit tests of the country lookup, vagrant (without a hypervisor: its
# recommends are left out) for the syntax check of the vagrant scenario, and
# lua5.1, gcc and the Lua 5.1 headers for the unit tests of the ModSecurity
# bridge (its message, and its native half built as the role builds it), and
# linux-perf for `make profile-bridge`.
set -euo pipefail
packages=(debootstrap systemd-container openssh-client iproute2 wrk redis-server geoip-database vagrant lua5.1 gcc liblua5.1-0-dev linux-perf)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0
if [[ $EUID -ne 0 ]]; then
  echo "install-host-deps: need root to install ${missing[*]} (the test hosts need root anyway)" >&2
  exit 1
fi
echo "install-host-deps: installing ${missing[*]}"
DEBIAN_FRONTEND=noninteractive apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [[ " ${missing[*]} " == *" redis-server "* ]] && command -v systemctl >/dev/null; then
  systemctl disable --now redis-server.service >/dev/null 2>&1 || true
fi
