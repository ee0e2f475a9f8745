#!/usr/bin/env bash
# One gateway process per core behind HAProxy (deploy/haproxy.cfg): N mitmdump processes on
# PORT+1 .. PORT+N, HAProxy on HOST:PORT. Usage: CORES=4 PORT=8143 CONFIG=proxy.yaml scripts/cores.sh
# Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${CORES:-$(nproc)}
PORT=${PORT:-8143}
HOST=${HOST:-127.0.0.1}
CONFIG=${CONFIG:-proxy.yaml}
HAPROXY=$(PATH="$PATH:/usr/sbin:/sbin" command -v haproxy) || {
  echo "cores: haproxy is not installed (apt-get install haproxy)" >&2; exit 1; }
run=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait; rm -rf "$run"' EXIT INT TERM
servers=""
for i in $(seq 1 "$N"); do
  p=$((PORT + i))
  .venv/bin/mitmdump --set flow_detail=0 --set termlog_verbosity=warn -s addons/gateway.py --mode "reverse:http://127.0.0.1:1@$p" \
    --listen-host 127.0.0.1 --set connection_strategy=lazy --set "gateway_config=$CONFIG" &
  pids+=($!)
  servers+="    server gw$i 127.0.0.1:$p\n"
done
# the shipped config with this run's address and one server line per process
sed -e "s/^    bind .*/    bind $HOST:$PORT/" -e '/^    server gw/d' deploy/haproxy.cfg > "$run/haproxy.cfg"
printf "$servers" >> "$run/haproxy.cfg"
echo "cores: $N gateways on 127.0.0.1:$((PORT + 1))-$((PORT + N)), HAProxy on $HOST:$PORT (config $CONFIG)" >&2
"$HAPROXY" -db -f "$run/haproxy.cfg" &
pids+=($!)
wait -n
