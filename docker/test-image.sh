#!/usr/bin/env bash
# Build the image (BUILD_ONLY=1: just that), run it, and probe it: health, a chat answer, size and time to ready.
# Uses docker when its engine answers, else podman with the flags these sandboxes need
# (see README "Container"): runc, cgroupfs, no default ulimits, host network.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/ovchat:test}
PORT=${PORT:-18080}
NAME=ovchat-test-$$
WORK=$(mktemp -d)
trap 'cleanup' EXIT

BUILD_ARGS=()
RUN_ARGS=()
if docker info >/dev/null 2>&1; then
  ENGINE=(docker)
  RUN_ARGS+=(-p "127.0.0.1:${PORT}:${PORT}")
else
  command -v podman >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
  }
  printf '[containers]\ndefault_ulimits = []\n' > "$WORK/containers.conf"
  export CONTAINERS_CONF="$WORK/containers.conf"
  ENGINE=(podman --runtime runc --cgroup-manager=cgroupfs)
  # No image registry is reachable here: a Debian base made with debootstrap stands in
  # for the public python image, and PyPI is reached through this machine's proxy CA.
  if ! "${ENGINE[@]}" image exists localhost/debian:bookworm; then
    echo "Making localhost/debian:bookworm with debootstrap"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" >/dev/null
    tar -C "$WORK/rootfs" -c . | "${ENGINE[@]}" import - localhost/debian:bookworm >/dev/null
  fi
  printf '[global]\ncert = /run/host-ca.crt\n' > "$WORK/pip.conf"
  # --format docker: the OCI format would drop the HEALTHCHECK.
  BUILD_ARGS+=(--format docker --build-arg BASE_IMAGE=localhost/debian:bookworm --network=host
               -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro
               -v "$WORK/pip.conf:/etc/pip.conf:ro")
  RUN_ARGS+=(--network=host)
fi

cleanup() {
  "${ENGINE[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
  "${ENGINE[@]}" volume rm -f "$NAME-cache" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}

echo "Building $IMAGE with ${ENGINE[0]}"
"${ENGINE[@]}" build -f docker/Dockerfile -t "$IMAGE" "${BUILD_ARGS[@]}" .
SIZE=$("${ENGINE[@]}" image inspect --format '{{.Size}}' "$IMAGE")
if [ -n "${BUILD_ONLY:-}" ]; then
  printf 'image %s: %.0f MB\n' "$IMAGE" "$(echo "$SIZE / 1000000" | bc -l)"
  exit 0
fi

started=$(date +%s.%N)
"${ENGINE[@]}" run -d --name "$NAME" "${RUN_ARGS[@]}" -e OVCHAT_PORT="$PORT" \
  --read-only --tmpfs /tmp -v "$NAME-cache:/cache" "$IMAGE" >/dev/null
for _ in $(seq 1 300); do
  if curl -sf "http://127.0.0.1:${PORT}/health" >/dev/null; then break; fi
  if [ "$("${ENGINE[@]}" inspect -f '{{.State.Running}}' "$NAME")" != "true" ]; then
    "${ENGINE[@]}" logs "$NAME"; echo "container exited"; exit 1
  fi
  sleep 0.2
done
ready=$(date +%s.%N)
curl -sf "http://127.0.0.1:${PORT}/health" >/dev/null || { "${ENGINE[@]}" logs "$NAME"; exit 1; }
# docker keeps it in .Config.Healthcheck, podman in .Healthcheck: search the whole record.
"${ENGINE[@]}" image inspect --format '{{json .}}' "$IMAGE" | tr -d '\n' | grep -q 'Healthcheck.*/health' || {
  echo "the image has no HEALTHCHECK"; exit 1; }

answer=$(curl -sf "http://127.0.0.1:${PORT}/v1/chat/completions" -H 'content-type: application/json' \
  -d '{"model":"smollm2-135m-instruct","messages":[{"role":"user","content":"What is the capital of France?"}],"temperature":0}')
echo "$answer" | grep -q Paris || { echo "unexpected answer: $answer"; exit 1; }
dims=$(curl -sf "http://127.0.0.1:${PORT}/v1/embeddings" -H 'content-type: application/json' \
  -d '{"model":"all-minilm-l6-v2","input":"What is the capital of France?","encoding_format":"float"}' |
  python3 -c 'import json, sys; print(len(json.load(sys.stdin)["data"][0]["embedding"]))')
[ "$dims" = 384 ] || { echo "unexpected embedding: $dims dimensions"; exit 1; }
user=$("${ENGINE[@]}" exec "$NAME" id -u)
[ "$user" != 0 ] || { echo "the server runs as root"; exit 1; }
"${ENGINE[@]}" exec "$NAME" python3 -c "import torch" 2>/dev/null && { echo "torch is in the runtime image"; exit 1; }

printf 'image %s: %.0f MB, run to ready %.1f s, uid %s, answer contains Paris, 384-d embeddings\n' \
  "$IMAGE" "$(echo "$SIZE / 1000000" | bc -l)" "$(echo "$ready - $started" | bc -l)" "$user"
