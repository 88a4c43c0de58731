#!/usr/bin/env bash
# vllm-router (PyPI vllm-router 0.1.17, `make router` puts it in .venv-router) in front of
# ovchat replicas. `make cluster` runs it; by hand:
#   OVCHAT_ROUTER_PORT=8100 deploy/vllm-router/vllm-router.sh http://127.0.0.1:8101 http://127.0.0.1:8102
# Policy: OVCHAT_ROUTER_POLICY (default power_of_two, which polls each replica's /get_load;
# consistent_hash keeps a conversation's X-Session-ID on one replica; cache_aware keeps a
# prefix tree per replica; round_robin is the contrast).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
router="${OVCHAT_ROUTER_BIN:-$here/../../.venv-router/bin/vllm-router}"
args=(
  --host "${OVCHAT_ROUTER_HOST:-127.0.0.1}"
  --port "${OVCHAT_ROUTER_PORT:-8100}"
  --policy "${OVCHAT_ROUTER_POLICY:-power_of_two}"
  # /health is 503 while a replica drains or its engine restarts: checked every second,
  # out after one failure, back after one success (the default, 60 s, is far too slow).
  --health-check-endpoint /health
  --health-check-interval-secs 1
  --health-check-timeout-secs 2
  --health-failure-threshold 1
  --health-success-threshold 1
  # A refused connection or a 503 (a draining replica) is retried before the response
  # begins, for longer than a health check takes to see the replica gone (~4 s of
  # backoff), so a retry lands on a replica still in rotation.
  # The circuit breaker opens on the failures a killed replica causes; the health checks
  # already take it out, so the breaker re-probes after 2 s and closes on one success, or
  # a replica back within its default timeout would get no traffic (seen: 0 of 10).
  --cb-timeout-duration-secs 2
  --cb-success-threshold 1
  --retry-max-retries 6
  --retry-initial-backoff-ms 200
  --retry-max-backoff-ms 1000
  # Streams run for minutes.
  --request-timeout-secs 900
  --worker-startup-timeout-secs 600
  --worker-startup-check-interval 1
  --log-level "${OVCHAT_ROUTER_LOG_LEVEL:-info}"
  --worker-urls "$@"
)
exec "$router" "${args[@]}"
