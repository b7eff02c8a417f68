#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for the tests: initdb in a temp dir, listen on 127.0.0.1
# only, on a free port, trust auth (nothing but this machine can reach it). Prints the lines to
# eval, so the caller gets the URL:   eval "$(bash .ci/postgres.sh)"
# Stop it with:  bash .ci/postgres.sh stop   (uses PBXCRM_TEST_PG_DIR)
# Needs Debian's `postgresql` package (apt-get install -y postgresql).
set -euo pipefail

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bindir" ]; then
    echo "postgres.sh: no /usr/lib/postgresql/*/bin; apt-get install -y postgresql" >&2
    exit 1
fi
# PostgreSQL refuses to run as root; CI runs as root, so the cluster belongs to `postgres`.
runas=()
if [ "$(id -u)" = 0 ]; then
    runas=(runuser -u postgres --)
fi

if [ "${1:-start}" = stop ]; then
    "${runas[@]}" "$bindir/pg_ctl" -D "$PBXCRM_TEST_PG_DIR/data" -m fast -w stop >&2
    rm -rf "$PBXCRM_TEST_PG_DIR"
    exit 0
fi

dir=$(mktemp -d /tmp/pbxcrm-pg.XXXXXX)
chmod 755 "$dir"
if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${runas[@]}" "$bindir/initdb" -D "$dir/data" -U pbxcrm --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
# fsync off: a test cluster that is thrown away need not survive a power cut, and fsync makes the
# suite slow on CI disks. The production durability story is PostgreSQL's defaults.
"${runas[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
echo "export PBXCRM_TEST_PG_URL=postgresql://pbxcrm@127.0.0.1:$port/postgres"
echo "export PBXCRM_TEST_PG_DIR=$dir"
