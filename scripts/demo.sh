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
HOST_PORTS=(12221 12222)   # two "hosts": one local sshd, a port each (README "Hosts")
SSHD=${ROTATORD_SSHD_BIN:-/usr/sbin/sshd}
CFG=examples/demo.yaml
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

for port in $VAULT_PORT $CLOUD_PORT 19464 "${HOST_PORTS[@]}"; do
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

if [ -x "$SSHD" ] && command -v ssh-keygen >/dev/null; then
  # Two hosts launched with gpu-team's first key: make that key, put it in
  # each host's authorized_keys among other people's lines, and turn host
  # rotation on for gpu-team in a copy of the config.
  say "Two hosts: one local sshd on 127.0.0.1:${HOST_PORTS[0]} and :${HOST_PORTS[1]}, launched with gpu-team's first key"
  bin/rotatord run -config "$CFG" -once 2>"$DEMO/first-run.log"
  first=$(VAULT_ADDR=http://127.0.0.1:$VAULT_PORT "$VAULT" kv get -mount=secret -field=public_key ssh/demo/gpu-team)
  mkdir -p "$DEMO/sshd"
  ssh-keygen -q -t ed25519 -N '' -C demo-host -f "$DEMO/sshd/host_key"
  ssh-keygen -q -t ed25519 -N '' -C alice@laptop -f "$DEMO/sshd/alice"   # someone else's key, left alone
  : >"$DEMO/known_hosts"
  conf="$DEMO/sshd/sshd_config"
  {
    for port in "${HOST_PORTS[@]}"; do echo "ListenAddress 127.0.0.1:$port"; done
    echo "HostKey $PWD/$DEMO/sshd/host_key"
    printf '%s\n' "PidFile none" "UsePAM no" "UseDNS no" "PasswordAuthentication no" "KbdInteractiveAuthentication no" \
      "PermitRootLogin prohibit-password" "StrictModes no" "AuthorizedKeysFile none" "Subsystem sftp internal-sftp"
  } >"$conf"
  for port in "${HOST_PORTS[@]}"; do
    home="$PWD/$DEMO/host-$port"
    mkdir -p "$home/.ssh" && chmod 700 "$home/.ssh"
    printf '# host %s: the ops team'"'"'s lines stay as they are\nfrom="10.0.0.0/8" %s\n%s\n' "$port" "$(cat "$DEMO/sshd/alice.pub")" "$first" >"$home/.ssh/authorized_keys"
    chmod 600 "$home/.ssh/authorized_keys"
    printf 'Match LocalPort %s\n\tAuthorizedKeysFile %s\n\tForceCommand internal-sftp -d %s\n' "$port" "$home/.ssh/authorized_keys" "$home" >>"$conf"
    echo "[127.0.0.1]:$port $(cat "$DEMO/sshd/host_key.pub")" >>"$DEMO/known_hosts"
  done
  if [ "$(id -u)" = 0 ]; then mkdir -p /run/sshd; fi   # sshd's privilege separation directory
  "$SSHD" -D -e -f "$conf" >"$DEMO/sshd.log" 2>&1 &
  pids+=($!)
  CFG="$DEMO/demo-hosts.yaml"
  user=$(id -un)
  sed "s|^    vault_path: ssh/demo/gpu-team\$|&\\
    hosts:\\
      targets: [$user@127.0.0.1:${HOST_PORTS[0]}, $user@127.0.0.1:${HOST_PORTS[1]}]\\
      known_hosts: $DEMO/known_hosts|" examples/demo.yaml >"$CFG"
  for port in "${HOST_PORTS[@]}"; do
    for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  done
  say "authorized_keys of both hosts BEFORE (the gpu-team key is the last line)"
  for port in "${HOST_PORTS[@]}"; do echo "  --- host :$port"; sed 's/^/  /' "$DEMO/host-$port/.ssh/authorized_keys"; done
else
  say "No sshd at $SSHD: skipping the hosts part (install it with: sudo apt-get install openssh-server)"
fi

say "rotatord check"
bin/rotatord check -config "$CFG"

say "rotatord plan (dry run: nothing changes)"
bin/rotatord plan -config "$CFG" 2>/dev/null

say "rotatord run for ${RUN_SECONDS}s: keys are due 10s after creation, retired keys deleted 10s after rotation"
bin/rotatord run -config "$CFG" 2> >(tee "$DEMO/rotatord.log" |
  grep --line-buffered -E '"msg":"(rotated|deleted retired key|added current key|removed retired keys|rotatord ready|stopped)"' |
  sed -u -E 's/.*"time":"([^"]*)".*"msg":"([^"]*)".*"policy":"([^"]*)".*/  \1  \3: \2/; s/.*"msg":"(rotatord ready|stopped)".*/  \1/') &
rot=$!
pids+=($rot)

say "Machines launched with the first keys (the fake cloud's admin API): 3 Gcore instances, 2 Sesterce"
kvget() { VAULT_ADDR=http://127.0.0.1:$VAULT_PORT "$VAULT" kv get -mount=secret -field="$1" "$2" 2>/dev/null; }
for _ in $(seq 1 100); do
  if kvget key_name ssh/demo/inference >/dev/null && kvget key_id ssh/demo/gpu-team >/dev/null; then break; fi
  sleep 0.2
done
first_gcore=$(kvget key_name ssh/demo/inference)
first_sesterce=$(kvget key_id ssh/demo/gpu-team)
for i in 1 2 3; do
  curl -fsS -X POST "http://127.0.0.1:$CLOUD_PORT/admin/instances" -o /dev/null -d \
    "{\"provider\":\"gcore\",\"name\":\"trainer-$i\",\"key_name\":\"$first_gcore\",\"project\":1234,\"region\":76,\"region_name\":\"Luxembourg\"}"
done
for i in 1 2; do
  curl -fsS -X POST "http://127.0.0.1:$CLOUD_PORT/admin/instances" -o /dev/null -d \
    "{\"provider\":\"sesterce\",\"name\":\"notebook-$i\",\"key_id\":\"$first_sesterce\"}"
done
echo "  trainer-1..3 launched with $first_gcore; notebook-1..2 with Sesterce key $first_sesterce"
echo "  (each run lists them; once rotatord deletes those keys, the machines still accept them: exposed)"
sleep "$RUN_SECONDS"

say "rotatord status (through the control socket)"
bin/rotatord status -config "$CFG"

say "A key leaked? rotatord rotate -all -emergency (old keys deleted at once)"
bin/rotatord rotate -config "$CFG" -all -emergency

kill -TERM $rot; wait $rot 2>/dev/null || true
sleep 0.5

say "Compliance report"
bin/rotatord report -config "$CFG" -fail-on overdue

say "Which machines the deleted first keys still open: rotatord report -fail-on exposed"
code=0
bin/rotatord report -config examples/demo.yaml -format markdown -fail-on exposed >"$DEMO/report.md" || code=$?
grep -E '^\| (Policy|gpu-team|inference) ' "$DEMO/report.md" | grep -E 'Key status|exposed' || true
echo "  report -fail-on exposed exited $code (3: a key rotatord deleted still opens running machines)"

say "The same report as one HTML page for auditors: $DEMO/report.html"
bin/rotatord report -config "$CFG" -format html -out "$DEMO/report.html"
echo "  open it in a browser, or: scripts/screenshot.sh $DEMO/report.html docs/report-demo.png"

say "Current key of each policy in Vault"
for path in ssh/demo/gpu-team ssh/demo/inference; do
  printf '  secret/%s: %s %s\n' "$path" \
    "$(VAULT_ADDR=http://127.0.0.1:$VAULT_PORT "$VAULT" kv get -mount=secret -field=key_name "$path")" \
    "$(VAULT_ADDR=http://127.0.0.1:$VAULT_PORT "$VAULT" kv get -mount=secret -field=fingerprint "$path")"
done

if [ "$CFG" != examples/demo.yaml ]; then
  say "authorized_keys of both hosts AFTER: the current gpu-team key only, the other lines byte for byte"
  for port in "${HOST_PORTS[@]}"; do echo "  --- host :$port"; sed 's/^/  /' "$DEMO/host-$port/.ssh/authorized_keys"; done
  printf '  current gpu-team key: %s\n' "$(VAULT_ADDR=http://127.0.0.1:$VAULT_PORT "$VAULT" kv get -mount=secret -field=fingerprint ssh/demo/gpu-team)"
fi

say "Done. Logs are in $DEMO/; every process the demo started is stopped."
