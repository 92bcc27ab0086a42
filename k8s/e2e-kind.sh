#!/usr/bin/env bash
# `make e2e-kind`: build the images, load them into a kind cluster, apply k8s/overlays/kind,
# wait for every workload, then run tests/e2e against the cluster through port-forwards.
# Needs docker, kind and kubectl. KIND_CLUSTER (default noetl) picks the cluster;
# KEEP_CLUSTER=1 keeps it afterwards. tests/e2e must honour NOETL_E2E_API_URL to use it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER=${KIND_CLUSTER:-noetl}
NAMESPACE=noetl
PY=${PY:-$ROOT/.venv/bin/python}
SERVICES=(control-api outbox-publisher projector system-worker)
INFRA=(statefulset/postgres statefulset/nats)
WORKLOADS=(
  deployment/noetl-control-api
  deployment/noetl-outbox-publisher
  statefulset/noetl-projector
  deployment/noetl-worker-shared
  deployment/noetl-worker-system
)

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "e2e-kind: $tool is not installed" >&2; exit 2; }
done

k() { kubectl --context "kind-$CLUSTER" -n "$NAMESPACE" "$@"; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then kind delete cluster --name "$CLUSTER"; fi
}
trap cleanup EXIT

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s

for svc in "${SERVICES[@]}"; do
  docker build -f "$ROOT/services/$svc/Dockerfile" -t "noetl-$svc:dev" "$ROOT"
  kind load docker-image --name "$CLUSTER" "noetl-$svc:dev"
done

kubectl --context "kind-$CLUSTER" apply -k "$ROOT/k8s/overlays/kind"
for workload in "${INFRA[@]}" "${WORKLOADS[@]}"; do
  k rollout status "$workload" --timeout=300s
done

k port-forward svc/noetl-control-api 18082:8082 >/dev/null & pids+=($!)
k port-forward svc/postgres 15432:5432 >/dev/null & pids+=($!)
sleep 2

# The kind overlay's dev-only bootstrap admin token (k8s/overlays/kind/secrets.yaml), for the
# CLI and the tests; port-forwarded traffic enters the pod directly, so no NetworkPolicy applies.
NOETL_API_TOKEN=noetl_kind-only-admin-token-not-a-secret \
NOETL_E2E_API_URL=http://127.0.0.1:18082 \
NOETL_E2E_DATABASE_URL=postgresql://noetl:noetl-kind-only@127.0.0.1:15432/noetl \
  "$PY" -m pytest "$ROOT/tests/e2e" "$@"
