#!/usr/bin/env bash
# Make sure Debian's docker engine runs here and that the project's Debian
# systemd base image exists (Debian 12 unless FLOWEROPS_DEBIAN_RELEASE=13 asks
# for Debian 13). Safe to run again: it reuses what is already there.
#
# No registry is reachable, so the image is built from Debian packages
# (debootstrap, then `docker import`). The mirror is read from this machine's
# own apt sources at run time; none is written into the repository.
set -euo pipefail

RELEASE="${FLOWEROPS_DEBIAN_RELEASE:-12}"
case "$RELEASE" in
  12) SUITE=bookworm ;;
  13) SUITE=trixie ;;
  *) echo "FLOWEROPS_DEBIAN_RELEASE must be 12 or 13, not '$RELEASE'" >&2; exit 2 ;;
esac
IMAGE="${FLOWEROPS_IMAGE:-flowerops/debian${RELEASE}-systemd:latest}"
log() { printf '==> %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "prepare-engine.sh must run as root (it installs packages and starts dockerd)" >&2
    exit 1
  fi
}

# The first deb822 URIs line of the host's sources: the mirror this machine reaches.
host_mirror() {
  local uri
  uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || { echo "no Debian mirror found in the host's apt sources" >&2; exit 1; }
  printf '%s\n' "$uri"
}

default_route_mtu() {
  local dev
  dev=$(ip route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
  [ -n "$dev" ] && cat "/sys/class/net/$dev/mtu" 2>/dev/null || echo 1500
}

ensure_engine() {
  # docker.io, debootstrap and the rest come from the one list.
  bash "$(dirname "${BASH_SOURCE[0]}")/host-packages.sh"
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  need_root
  if [ ! -f /etc/docker/daemon.json ]; then
    mkdir -p /etc/docker
    printf '{"mtu": %s}\n' "$(default_route_mtu)" > /etc/docker/daemon.json
  fi
  if [ -d /run/systemd/system ]; then
    log "starting docker with systemd"
    systemctl start docker
  else
    # No systemd on this machine (CI): run the daemon by hand, in the background.
    log "starting dockerd by hand (no systemd here)"
    nohup dockerd --host=unix:///var/run/docker.sock >/var/log/flowerops-dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "dockerd did not come up; see /var/log/flowerops-dockerd.log" >&2
  exit 1
}

prepare_rootfs() {
  local rootfs="$1"
  # apt inside the image uses the same sources as this host.
  rm -f "$rootfs/etc/apt/sources.list"
  cp /etc/apt/sources.list.d/*.sources "$rootfs/etc/apt/sources.list.d/" 2>/dev/null || true
  [ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$rootfs/etc/apt/sources.list"
  # Another release than the host's: the same mirrors, its suites (trixie, trixie-updates, trixie-security).
  local host_suite
  host_suite=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
  if [ -n "$host_suite" ] && [ "$host_suite" != "$SUITE" ]; then
    sed -i -E "s/\\b${host_suite}\\b/${SUITE}/g" "$rootfs"/etc/apt/sources.list.d/*.sources \
      "$rootfs/etc/apt/sources.list" 2>/dev/null || true
  fi
  echo 'Acquire::Check-Valid-Until "false";' > "$rootfs/etc/apt/apt.conf.d/10flowerops-no-valid-until"
  # Trust what the host trusts (an intercepting proxy's CA, if any); nothing is committed.
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
  fi
  : > "$rootfs/etc/machine-id"
  # Units that grab the dpkg lock mid-converge or make no sense in a container.
  for unit in apt-daily.timer apt-daily-upgrade.timer getty@tty1.service console-getty.service \
              e2scrub_all.timer e2scrub_reap.service fstrim.timer systemd-pstore.service \
              systemd-modules-load.service; do
    ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
  done
  # OpenSSH's server, as on a real host: Ansible and the tests reach the containers over SSH (the connection
  # production uses, and cheaper per call than docker exec). No host key in the image: each container makes
  # its own when sshd first starts.
  rm -f "$rootfs"/etc/ssh/ssh_host_*
  mkdir -p "$rootfs/etc/systemd/system/ssh.service.d"
  printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' >"$rootfs/etc/systemd/system/ssh.service.d/host-keys.conf"
  chroot "$rootfs" apt-get update -qq
  chroot "$rootfs" apt-get clean
}

# The image carries the hash of this script: an image built by an older recipe
# (a unit masked since, say) is built again rather than reused.
RECIPE=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)

ensure_image() {
  local built
  built=$(docker image inspect -f '{{ index .Config.Labels "flowerops.recipe" }}' "$IMAGE" 2>/dev/null || true)
  if [ "$built" = "$RECIPE" ]; then
    log "image $IMAGE present, reusing it"
    return 0
  fi
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image $IMAGE was built by another version of this script: building it again"
  fi
  need_root
  local rootfs mirror
  rootfs=$(mktemp -d /var/tmp/flowerops-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' RETURN
  mirror=$(host_mirror)
  if ! curl -fsS -o /dev/null --max-time 30 "${mirror%/}/dists/$SUITE/Release"; then
    echo "the Debian mirror in this machine's apt sources does not serve $SUITE (Debian $RELEASE):" \
      "no dists/$SUITE/Release there; build the Debian $RELEASE image on a machine whose mirror has it" >&2
    exit 1
  fi
  log "debootstrapping Debian $SUITE (about a minute)"
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,iproute2,procps,ca-certificates,openssh-server \
    "$SUITE" "$rootfs" "$mirror" >/dev/null
  prepare_rootfs "$rootfs"
  log "importing $IMAGE"
  tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'CMD ["/sbin/init"]' --change 'ENV container=docker' --change "LABEL flowerops.recipe=$RECIPE" \
    - "$IMAGE" >/dev/null
}

ensure_engine
case "${1:-all}" in
  engine) ;;
  all | image) ensure_image ;;
  *) echo "usage: $0 [engine|image|all]" >&2; exit 2 ;;
esac
