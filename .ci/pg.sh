#!/usr/bin/env bash
# A throwaway PostgreSQL 15 for the `postgres` tests: `bash .ci/pg.sh CMD ARGS...` creates a
# cluster in a temp dir (trust auth, user `silo`, a free loopback port, the socket inside the dir),
# starts it, runs CMD with
#   SILOGRAPH_POSTGRES_URL      a libpq connection string to database `silo`
#   SILOGRAPH_POSTGRES_DATADIR  the cluster's data dir (the restart test runs `pg_ctl restart`)
#   SILOGRAPH_PG_BIN            the directory of Debian's postgresql-15 binaries (off the PATH)
#   SILOGRAPH_PG_OPTS           the server options it was started with (for `pg_ctl start`)
# exported, then stops the server and removes the dir on exit, whatever CMD did. Exits with
# CMD's status. `bash .ci/pg.sh bash` gives a shell with a server to play with.
# The server runs as the `postgres` user (initdb refuses root), so this needs root or that user.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 CMD [ARGS...]" >&2
  exit 2
fi

bin="$(dirname "$(dpkg -L postgresql-15 | grep -E 'bin/initdb$' | head -n1)")"
if [ ! -x "$bin/initdb" ] || [ ! -x "$bin/pg_ctl" ]; then
  echo "pg.sh: postgresql-15's initdb/pg_ctl not found (apt-get install postgresql-15)" >&2
  exit 1
fi

as_pg() {
  if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi
}

dir="$(mktemp -d /tmp/silograph-pg.XXXXXX)"
chmod 755 "$dir"
data="$dir/data"
mkdir "$data"
chown -R postgres "$dir" 2>/dev/null || true

stop() {
  as_pg "$bin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT

# A free loopback port: nothing answers on it now (a race with another starter is caught by the
# start below failing, and then the next port is tried).
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

as_pg "$bin/initdb" -D "$data" -A trust -U silo -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }

started=""
for port in $(shuf -i 20000-60000 -n 20); do
  port_free "$port" || continue
  opts="-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200"
  if as_pg "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 -o "$opts" start >/dev/null; then
    started="$port"
    break
  fi
done
if [ -z "$started" ]; then
  echo "pg.sh: the server did not start" >&2
  cat "$dir/server.log" >&2 || true
  exit 1
fi

as_pg "$bin/psql" -h 127.0.0.1 -p "$started" -U silo -d postgres -q -c 'CREATE DATABASE silo' >/dev/null

export SILOGRAPH_POSTGRES_URL="host=127.0.0.1 port=$started user=silo dbname=silo"
export SILOGRAPH_POSTGRES_DATADIR="$data"
export SILOGRAPH_PG_BIN="$bin"
export SILOGRAPH_PG_OPTS="$opts"
echo "pg.sh: PostgreSQL 15 on 127.0.0.1:$started ($data)"

set +e
"$@"
status=$?
set -e
exit "$status"
