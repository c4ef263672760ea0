#!/usr/bin/env bash
# Starts a throwaway PostgreSQL on loopback for the store tests and prints its URL.
#   url=$(bash scripts/postgres.sh start DIR)   # a new cluster in DIR (must not exist)
#   bash scripts/postgres.sh restart DIR        # what a database restart does to clients
#   bash scripts/postgres.sh stop DIR
# Installs PostgreSQL from Debian's packages when it is missing. PostgreSQL refuses to run
# as root, so as root the cluster belongs to the `postgres` user the package creates.
set -euo pipefail
cmd=${1:?start, restart or stop}
dir=${2:?a directory for the cluster}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] && ! command -v initdb >/dev/null; then
  echo "installing PostgreSQL (apt-get install postgresql)" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
[ -n "$bin" ] || bin=$(dirname "$(command -v initdb)")
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "$cmd" in
  start)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
      chown postgres "$dir"
      # The owner must reach the cluster through its parent (mktemp -d makes it 0700).
      chmod o+x "$(dirname "$dir")"
    fi
    as_owner "$bin/initdb" -D "$dir/data" -U temper --auth=trust --locale=C -E UTF8 >"$dir/initdb.log"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >&2
    echo "postgres://temper@127.0.0.1:$port/postgres"
    ;;
  restart)
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w restart >&2
    ;;
  stop)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast stop >&2 || true
    ;;
  *) echo "usage: $0 start|restart|stop DIR" >&2; exit 2 ;;
esac
