#!/usr/bin/env bash
# make demo: rotatord end to end on local stand-ins — the fake cloud, a real
# Vault dev server — for about a minute, then the compliance report.
# Everything it starts, it stops (also on Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO=tmp/demo
VAULT_PORT=18200
CLOUD_PORT=18088
RUN_SECONDS=${DEMO_SECONDS:-40}
export VAULT_TOKEN="demo-root-$RANDOM$RANDOM"
export SESTERCE_API_KEY="demo-sesterce-key"
export GCORE_API_KEY="demo-gcore-key"
export ROTATORD_SWEEP_INTERVAL=2s   # check retired keys every 2s (default 1m)
export ROTATORD_BACKOFF_BASE=2s

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

for port in $VAULT_PORT $CLOUD_PORT 19464; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "port $port is in use; stop what listens there and run make demo again" >&2
    exit 1
  fi
done

VAULT=$(command -v vault || true)
if [ -z "$VAULT" ]; then
  if [ ! -x bin/vault ]; then
    say "No vault on PATH: building Vault v1.21.1 once into bin/vault (about 30 minutes on 2 cores; later runs reuse it)"
  fi
  make -s vault
  VAULT=bin/vault
fi

rm -rf "$DEMO" && mkdir -p "$DEMO"

say "Starting a Vault dev server on 127.0.0.1:$VAULT_PORT"
HOME="$PWD/$DEMO" "$VAULT" server -dev -dev-listen-address=127.0.0.1:$VAULT_PORT \
  -dev-root-token-id="$VAULT_TOKEN" >"$DEMO/vault.log" 2>&1 &
pids+=($!)

say "Starting the fake cloud (Sesterce + Gcore APIs) on 127.0.0.1:$CLOUD_PORT"
bin/fakecloud -listen 127.0.0.1:$CLOUD_PORT -sesterce-key "$SESTERCE_API_KEY" -gcore-key "$GCORE_API_KEY" \
  -latency 20ms >"$DEMO/fakecloud.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$VAULT_PORT/v1/sys/health" >/dev/null 2>&1 &&
     curl -fsS "http://127.0.0.1:$CLOUD_PORT/admin/healthz" >/dev/null 2>&1; then break; fi
  sleep 0.2
done

say "rotatord check"
bin/rotatord check -config examples/demo.yaml

say "rotatord plan (dry run: nothing changes)"
bin/rotatord plan -config examples/demo.yaml 2>/dev/null

say "rotatord run for ${RUN_SECONDS}s: keys are due 10s after creation, retired keys deleted 10s after rotation"
bin/rotatord run -config examples/demo.yaml 2> >(tee "$DEMO/rotatord.log" |
  grep --line-buffered -E '"msg":"(rotated|deleted retired key|rotatord ready|stopped)"' |
  sed -u -E 's/.*"time":"([^"]*)".*"msg":"([^"]*)".*"policy":"([^"]*)".*/  \1  \3: \2/; s/.*"msg":"(rotatord ready|stopped)".*/  \1/') &
rot=$!
pids+=($rot)
sleep "$RUN_SECONDS"

say "rotatord status (through the control socket)"
bin/rotatord status -config examples/demo.yaml

say "A key leaked? rotatord rotate -all -emergency (old keys deleted at once)"
bin/rotatord rotate -config examples/demo.yaml -all -emergency

kill -TERM $rot; wait $rot 2>/dev/null || true
sleep 0.5

say "Compliance report"
bin/rotatord report -config examples/demo.yaml -fail-on overdue

say "The same report as one HTML page for auditors: $DEMO/report.html"
bin/rotatord report -config examples/demo.yaml -format html -out "$DEMO/report.html"
echo "  open it in a browser, or: scripts/screenshot.sh $DEMO/report.html docs/report-demo.png"

say "Current key of each policy in Vault"
for path in ssh/demo/gpu-team ssh/demo/inference; do
  printf '  secret/%s: %s %s\n' "$path" \
    "$(VAULT_ADDR=http://127.0.0.1:$VAULT_PORT "$VAULT" kv get -mount=secret -field=key_name "$path")" \
    "$(VAULT_ADDR=http://127.0.0.1:$VAULT_PORT "$VAULT" kv get -mount=secret -field=fingerprint "$path")"
done

say "Done. Logs are in $DEMO/; every process the demo started is stopped."
