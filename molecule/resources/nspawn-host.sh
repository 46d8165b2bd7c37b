#!/usr/bin/env bash
# Throwaway systemd hosts for the Molecule scenarios.
#
# A Debian rootfs is made once per release with debootstrap and cached; every
# instance boots a private copy of it with systemd-nspawn (systemd as PID 1,
# host network shared) and answers SSH on <address>:<port> (127.0.0.1 unless
# given: several hosts of one scenario each take their own loopback address)
# with a generated key.
# Downloaded .deb files are kept in a per-release cache: each host starts with
# hard links to it in its own archive directory (apt locks that directory, and
# several hosts of one scenario install at once) and hands what it downloaded
# back when destroyed, so warm runs do not download packages again.
#
#   nspawn-host.sh create  NAME RELEASE SSH_PORT [ADDRESS]   # prints the instance config as JSON
#   nspawn-host.sh destroy NAME
#   nspawn-host.sh status  NAME
#
# Environment: MLWAF_CACHE_DIR (default ~/.cache/mlwaf), MLWAF_DEBIAN_MIRROR and
# MLWAF_DEBIAN_SECURITY_MIRROR (default: read from this machine's apt sources).
set -euo pipefail

CACHE_DIR=${MLWAF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlwaf}
BASE_PACKAGES=systemd,systemd-sysv,dbus,openssh-server,python3,ca-certificates
BOOT_TIMEOUT=${MLWAF_BOOT_TIMEOUT:-180}

die() { echo "nspawn-host: $*" >&2; exit 1; }
log() { echo "nspawn-host: $*" >&2; }

need_tools() {
  local tool missing=()
  for tool in debootstrap systemd-nspawn ssh ssh-keygen; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  ((${#missing[@]} == 0)) || die "missing ${missing[*]}: run 'make host-deps' (installs debootstrap, systemd-container, openssh-client)"
  [[ $EUID -eq 0 ]] || die "systemd-nspawn needs root"
}

# The Debian mirror this machine's apt already uses (so the proxy and any
# snapshot pinning apply to the test hosts too), unless given explicitly.
apt_uris() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i} /^deb / {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}'
}
debian_mirror() {
  [[ -n ${MLWAF_DEBIAN_MIRROR:-} ]] && { echo "$MLWAF_DEBIAN_MIRROR"; return; }
  apt_uris | grep -E '/debian/?$' | head -n1 | sed 's:/$::' || true
}
security_mirror() {
  [[ -n ${MLWAF_DEBIAN_SECURITY_MIRROR:-} ]] && { echo "$MLWAF_DEBIAN_SECURITY_MIRROR"; return; }
  local uri
  uri=$(apt_uris | grep -E '/debian-security/?$' | head -n1 | sed 's:/$::' || true)
  echo "${uri:-$(debian_mirror)-security}"
}

# Build (once) the cached base rootfs for a release; atomic, so an interrupted
# debootstrap never leaves a half-made cache behind.
base_rootfs() {
  local release=$1 base="$CACHE_DIR/rootfs/$release" mirror security tmp
  if [[ -x "$base/usr/bin/python3" && -e "$base/.mlwaf-complete" ]]; then
    echo "$base"; return
  fi
  mirror=$(debian_mirror)
  [[ -n $mirror ]] || die "no Debian mirror found in /etc/apt; set MLWAF_DEBIAN_MIRROR"
  security=$(security_mirror)
  tmp="$base.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  log "debootstrap $release from $mirror (cached in $base)"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$release" "$tmp" "$mirror" >"$tmp.log" 2>&1 ||
    { tail -n 20 "$tmp.log" >&2; rm -rf "$tmp"; die "debootstrap $release failed (full log: $tmp.log)"; }
  rm -f "$tmp/etc/apt/sources.list"
  cat >"$tmp/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $release $release-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $release-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Keep downloaded packages: the archive directory is a shared cache.
  echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' >"$tmp/etc/apt/apt.conf.d/10mlwaf-keep-debs"
  # No console getty fighting over the pipe; no first-boot prompts.
  ln -sf /dev/null "$tmp/etc/systemd/system/console-getty.service"
  : >"$tmp/etc/machine-id"
  rm -f "$tmp.log"
  touch "$tmp/.mlwaf-complete"
  rm -rf "$base" && mv "$tmp" "$base"
  echo "$base"
}

instance_dir() { echo "$CACHE_DIR/hosts/$1"; }

# Free when nothing listens on it on this address or on all addresses.
port_free() { ! ss -Hltn "sport = :$2" | awk '{print $4}' | grep -qE "^($1|0\.0\.0\.0|\*|\[::\]):$2$"; }

ssh_args() {
  local dir=$1 port=$2 address=$3
  echo -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o LogLevel=ERROR -o ConnectTimeout=5 -i "$dir/id_ed25519" -p "$port" "root@$address"
}

cmd_create() {
  local name=$1 release=$2 port=$3 address=${4:-127.0.0.1} dir base root
  [[ $name =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "bad instance name '$name'"
  [[ $port =~ ^[0-9]+$ ]] || die "bad SSH port '$port'"
  [[ $address =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "bad address '$address': a loopback address (127.x.y.z), please"
  need_tools
  dir=$(instance_dir "$name")
  if [[ -f "$dir/pid" ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    log "$name is already running"
  else
    port_free "$address" "$port" ||
      die "port $port on $address is taken: another test host may still be up (nspawn-host.sh destroy NAME)"
    base=$(base_rootfs "$release")
    rm -rf "$dir" && mkdir -p "$dir/apt/partial" "$CACHE_DIR/apt/$release"
    find "$CACHE_DIR/apt/$release" -maxdepth 1 -name '*.deb' -exec ln -t "$dir/apt" {} + 2>/dev/null || true
    echo "$release" >"$dir/release"
    root="$dir/rootfs"
    log "copying $base for $name"
    cp -a --reflink=auto "$base" "$root"
    ssh-keygen -q -t ed25519 -N '' -C "molecule@$name" -f "$dir/id_ed25519"
    install -d -m 0700 "$root/root/.ssh"
    install -m 0600 "$dir/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
    cat >"$root/etc/ssh/sshd_config.d/10-molecule.conf" <<EOF
Port $port
ListenAddress $address
PermitRootLogin prohibit-password
PasswordAuthentication no
EOF
    echo "$name" >"$root/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$name" >"$root/etc/hosts"
    cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    echo "$port" >"$dir/port"
    echo "$address" >"$dir/address"
    log "booting $name ($release) with systemd-nspawn"
    setsid systemd-nspawn --boot --directory="$root" --machine="$name" --register=no --keep-unit \
      --bind="$dir/apt:/var/cache/apt/archives" --console=pipe \
      </dev/null >"$dir/console.log" 2>&1 &
    echo $! >"$dir/pid"
  fi
  port=$(cat "$dir/port")
  address=$(cat "$dir/address" 2>/dev/null || echo 127.0.0.1)
  local deadline=$((SECONDS + BOOT_TIMEOUT)) state=""
  # shellcheck disable=SC2046
  until state=$(ssh $(ssh_args "$dir" "$port" "$address") 'systemctl is-system-running --wait' 2>/dev/null) || [[ $state == degraded ]]; do
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { tail -n 30 "$dir/console.log" >&2; die "$name stopped while booting"; }
    ((SECONDS < deadline)) || { tail -n 30 "$dir/console.log" >&2; die "$name did not answer SSH within ${BOOT_TIMEOUT}s"; }
    sleep 1
  done
  log "$name is up (systemd: $state)"
  printf '{"instance": "%s", "address": "%s", "user": "root", "port": %s, "identity_file": "%s"}\n' \
    "$name" "$address" "$port" "$dir/id_ed25519"
}

cmd_destroy() {
  local name=$1 dir pid
  dir=$(instance_dir "$name")
  [[ -d $dir ]] || { log "$name does not exist"; return 0; }
  if [[ -f "$dir/pid" ]]; then
    pid=$(cat "$dir/pid")
    if kill -0 "$pid" 2>/dev/null; then
      # SIGTERM makes systemd-nspawn ask the container's systemd to power off.
      kill -TERM "$pid"
      for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && { log "$name did not power off in 30s; killing it"; kill -KILL "$pid"; sleep 1; }
    fi
  fi
  if [[ -f "$dir/release" ]]; then  # keep what it downloaded for the next hosts
    find "$dir/apt" -maxdepth 1 -name '*.deb' -exec cp -n -t "$CACHE_DIR/apt/$(cat "$dir/release")" {} + 2>/dev/null || true
  fi
  rm -rf "$dir"
  log "$name destroyed"
}

cmd_status() {
  local dir
  dir=$(instance_dir "$1")
  if [[ -f "$dir/pid" ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "running"
  else
    echo "stopped"; return 1
  fi
}

case ${1:-} in
  create) (($# == 4 || $# == 5)) || die "usage: $0 create NAME RELEASE SSH_PORT [ADDRESS]"; cmd_create "${@:2}" ;;
  destroy) (($# == 2)) || die "usage: $0 destroy NAME"; cmd_destroy "$2" ;;
  status) (($# == 2)) || die "usage: $0 status NAME"; cmd_status "$2" ;;
  *) die "usage: $0 {create NAME RELEASE SSH_PORT [ADDRESS]|destroy NAME|status NAME}" ;;
esac
