#!/usr/bin/env bash
# What the tests need from the distribution, beside Python and Node (present on our machines):
# Debian's Chromium, which the mitmweb browser tests drive through playwright (no browser
# download); redis-server, haproxy and postgresql (tests/services.py). Installed only when missing and when
# we may (root); otherwise those tests skip
# and say why.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
PATH="$PATH:/usr/sbin:/sbin" command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
PATH="$PATH:/usr/sbin:/sbin" command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
# PostgreSQL's server binaries (tests/services.postgres_server: initdb, pg_ctl, postgres)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${need[*]} (install them to run every test; the tests that need them skip)" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
