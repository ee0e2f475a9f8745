#!/usr/bin/env bash
# The reference deployment on one machine (README "Running on several cores / hosts"): Redis and
# PostgreSQL from the distribution's packages, N gateways sharing them, HAProxy (deploy/haproxy.cfg)
# in front on HOST:PORT; gateways on PORT+1 .. PORT+N, Redis on PORT+N+1, PostgreSQL on PORT+N+2.
# Each gateway reads a copy of CONFIG with server.state and log.database set to these services, in
# its own folder (its state file, request-log spill). Usage: FLEET=3 PORT=8143 CONFIG=proxy.yaml scripts/fleet.sh
# Ctrl-C stops everything and removes the temp folder.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${FLEET:-2}
PORT=${PORT:-8143}
HOST=${HOST:-127.0.0.1}
CONFIG=${CONFIG:-proxy.yaml}
REDIS_PORT=$((PORT + N + 1))
PG_PORT=$((PORT + N + 2))
PATH="$PATH:/usr/sbin:/sbin"
need() { command -v "$1" >/dev/null || { echo "fleet: $1 is not installed (apt-get install $2)" >&2; exit 1; }; }
need haproxy haproxy
need redis-server redis-server
PG=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PG/initdb" ] || { echo "fleet: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
as_pg=()  # PostgreSQL refuses to run as root: as the package's 'postgres' user then
[ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)

run=$(mktemp -d)
pids=()
stop() {
  trap - EXIT INT TERM
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -f "$run/pg/data/postmaster.pid" ] && { "${as_pg[@]}" "$PG/pg_ctl" -D "$run/pg/data" -m fast -w stop >/dev/null || true; }
  rm -rf "$run"
}
trap stop EXIT INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$run" >"$run/redis.log" &
pids+=($!)

password=$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))')
mkdir "$run/pg" && printf %s "$password" >"$run/pg/pw"
if [ ${#as_pg[@]} -gt 0 ]; then chmod 711 "$run"; chown -R postgres "$run/pg"; fi
"${as_pg[@]}" "$PG/initdb" -D "$run/pg/data" -U llmgate --pwfile="$run/pg/pw" --auth-host=scram-sha-256 \
  --auth-local=trust -E UTF8 >"$run/pg/initdb.log"
"${as_pg[@]}" "$PG/pg_ctl" -D "$run/pg/data" -l "$run/pg/log" -w -o \
  "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$run/pg" start >/dev/null
"${as_pg[@]}" "$PG/createdb" -h "$run/pg" -p "$PG_PORT" -U llmgate llmgate
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break; sleep 0.1; done

servers=""
for i in $(seq 1 "$N"); do
  p=$((PORT + i))
  mkdir "$run/gw$i"
  # the user's file as written (${VAR} kept), its state and log files left to default beside the copy
  .venv/bin/python -c 'import sys, yaml; from llmgate.operations.config_edit import read_config
c = read_config(sys.argv[1]); server, log = c.setdefault("server", {}), c.setdefault("log", {})
server.pop("state_file", None); log.pop("file", None); server["state"], log["database"] = sys.argv[2:4]
print(yaml.safe_dump(c, sort_keys=False))' "$CONFIG" "redis://127.0.0.1:$REDIS_PORT/0" \
    "postgresql://llmgate:$password@127.0.0.1:$PG_PORT/llmgate" >"$run/gw$i/proxy.yaml"
  .venv/bin/mitmdump --set flow_detail=0 --set termlog_verbosity=warn -s addons/gateway.py --mode "reverse:http://127.0.0.1:1@$p" \
    --listen-host 127.0.0.1 --set connection_strategy=lazy --set "gateway_config=$run/gw$i/proxy.yaml" &
  pids+=($!)
  servers+="    server gw$i 127.0.0.1:$p\n"
done
sed -e "s/^    bind .*/    bind $HOST:$PORT/" -e '/^    server gw/d' deploy/haproxy.cfg > "$run/haproxy.cfg"
printf "$servers" >> "$run/haproxy.cfg"
haproxy -db -f "$run/haproxy.cfg" &
pids+=($!)
echo "fleet: $N gateways on 127.0.0.1:$((PORT + 1))-$((PORT + N)) (config $CONFIG), HAProxy on $HOST:$PORT," \
  "Redis on 127.0.0.1:$REDIS_PORT, PostgreSQL on 127.0.0.1:$PG_PORT (database llmgate); files in $run" >&2
wait -n
