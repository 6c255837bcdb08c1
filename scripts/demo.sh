#!/usr/bin/env bash
# The local demo: a long-lived systemd container `flowerops-demo` with the whole
# stack deployed by `ansible-playbook playbooks/demo.yml -i inventories/demo`
# (the fixtures, site.yml, then the production checklist).
#   scripts/demo.sh up        create or reuse the container, deploy, print where to log in
#   scripts/demo.sh destroy   remove the container and the demo's generated secrets
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=flowerops-demo
IMAGE="${FLOWEROPS_IMAGE:-flowerops/debian12-systemd:latest}"
# Port on this machine's loopback that reaches the demo's nginx (HTTPS, 443).
DEMO_PORT="${DEMO_PORT:-8443}"
DEMO_DOMAIN=flower.localhost
SECRETS_DIR=.demo

# The same container settings as the Molecule scenario (see there for why);
# the capability list is read from it so the two cannot drift apart.
mapfile -t CAPS < <(python3 -c '
import yaml
platform = yaml.safe_load(open("molecule/default/molecule.yml"))["platforms"][0]
print("\n".join(platform["capabilities"]))')

start_container() {
  local state
  state=$(docker inspect -f '{{.State.Status}}' "$NAME" 2>/dev/null || true)
  case "$state" in
    running)
      if [ "$(docker port "$NAME" 443/tcp 2>/dev/null)" != "127.0.0.1:${DEMO_PORT}" ]; then
        echo "==> $NAME does not publish HTTPS on 127.0.0.1:${DEMO_PORT} (an older demo?): make demo-destroy first" >&2
        exit 1
      fi
      echo "==> reusing the running container $NAME" ;;
    "")
      echo "==> starting container $NAME"
      docker run -d --name "$NAME" --hostname "$NAME" \
        --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
        --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
        --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
        --stop-signal SIGRTMIN+3 --env container=docker \
        "${CAPS[@]/#/--cap-add=}" \
        --publish "127.0.0.1:${DEMO_PORT}:443" \
        "$IMAGE" /sbin/init >/dev/null
      ;;
    *) echo "==> starting the stopped container $NAME"; docker start "$NAME" >/dev/null ;;
  esac
  for _ in $(seq 1 60); do
    case "$(docker exec "$NAME" systemctl is-system-running 2>/dev/null || true)" in
      running | degraded) return 0 ;;
    esac
    sleep 1
  done
  echo "systemd in $NAME did not finish booting" >&2
  exit 1
}

up() {
  start_container
  install -d -m 0700 "$SECRETS_DIR"
  # The fixtures (broker, worker), then site.yml, then the production checklist.
  ansible-playbook playbooks/demo.yml -i inventories/demo
  cat <<EOT

Flower is up, behind nginx with HTTPS from the demo's own CA.
  Open:      https://${DEMO_DOMAIN}:${DEMO_PORT}/
  User:      admin     password in $(pwd)/${SECRETS_DIR}/admin-password (mode 0600; not printed here)
  Viewer:    viewer    password in $(pwd)/${SECRETS_DIR}/viewer-password (read only)
  CA:        $(pwd)/${SECRETS_DIR}/ca.crt, e.g.
             curl --cacert ${SECRETS_DIR}/ca.crt -u admin:"\$(cat ${SECRETS_DIR}/admin-password)" https://${DEMO_DOMAIN}:${DEMO_PORT}/api/workers
  Send a sample task:  docker exec $NAME demo-worker-call add '[2, 3]'
  Remove the demo:     make demo-destroy
EOT
}

destroy() {
  docker rm -f "$NAME" >/dev/null 2>&1 && echo "==> removed $NAME" || echo "==> no $NAME container"
  rm -rf "$SECRETS_DIR"
}

case "${1:-}" in
  up) up ;;
  destroy) destroy ;;
  *) echo "usage: $0 up|destroy" >&2; exit 2 ;;
esac
