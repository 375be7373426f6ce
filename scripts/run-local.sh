#!/usr/bin/env bash
# Starts the product on this machine for a try-out: scheduler, agent-gateway and
# api-server against the local Postgres and Redis in dev mode, plus simulated
# agents. Ctrl-C stops everything. Used by `make run`.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${ADMIN_DATABASE_URL:=postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable}"
: "${DATABASE_NAME:=viworks}"
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/${DATABASE_NAME}?sslmode=disable}"
: "${REDIS_URL:=redis://127.0.0.1:6379/0}"
: "${API_PORT:=8080}"
: "${GATEWAY_PORT:=8081}"
: "${SCHEDULER_PORT:=8082}"
: "${DEMO_AGENTS:=5}"
: "${AGENT_ENROLLMENT_SECRET:=dev-enrollment-secret}"
: "${RUN_DIR:=data/run}"
export DATABASE_URL REDIS_URL AGENT_ENROLLMENT_SECRET
export VIWORKS_DEV_MODE=1
export LOG_FORMAT="${LOG_FORMAT:-text}"

mkdir -p "$RUN_DIR"

if command -v psql >/dev/null 2>&1; then
  if ! psql "$ADMIN_DATABASE_URL" -tAc "SELECT 1 FROM pg_database WHERE datname = '${DATABASE_NAME}'" | grep -q 1; then
    echo "creating database ${DATABASE_NAME}"
    psql "$ADMIN_DATABASE_URL" -qc "CREATE DATABASE \"${DATABASE_NAME}\""
  fi
fi

bin/scheduler migrate

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

bin/scheduler --port "$SCHEDULER_PORT" >"$RUN_DIR/scheduler.log" 2>&1 & pids+=($!)
bin/agent-gateway --port "$GATEWAY_PORT" >"$RUN_DIR/agent-gateway.log" 2>&1 & pids+=($!)
bin/api-server --port "$API_PORT" >"$RUN_DIR/api-server.log" 2>&1 & pids+=($!)

for port in "$SCHEDULER_PORT" "$GATEWAY_PORT" "$API_PORT"; do
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:${port}/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:${port}/readyz" >/dev/null || { echo "service on port ${port} did not become ready; see ${RUN_DIR}/*.log"; exit 1; }
done

bin/agentsim --gateway "ws://127.0.0.1:${GATEWAY_PORT}/ws/agent" --agents "$DEMO_AGENTS" --prefix sim- \
  --enrollment-secret "$AGENT_ENROLLMENT_SECRET" --site dev --labels role=demo >"$RUN_DIR/agentsim.log" 2>&1 & pids+=($!)

cat <<MSG

ViWorkS is running (dev mode): api-server :${API_PORT}, agent-gateway :${GATEWAY_PORT}, scheduler :${SCHEDULER_PORT}
${DEMO_AGENTS} simulated agents (sim-0 ... sim-$((DEMO_AGENTS - 1))) connect to ws://127.0.0.1:${GATEWAY_PORT}/ws/agent
Logs: ${RUN_DIR}/*.log. Press Ctrl-C to stop.

Try it (in another terminal):
  export TOKEN=\$(bin/api-server token --dev --subject me --role operator)
  curl -s -H "Authorization: Bearer \$TOKEN" 'http://localhost:${API_PORT}/api/v1/agents?status=online'

ready
MSG

wait -n "${pids[@]}" || true
echo "a service exited; see ${RUN_DIR}/*.log"
exit 1
