#!/usr/bin/env bash
# Greylisting policy decisions per second over the Postfix policy protocol, on one request
# stream (greylist/examples/policy_load.rs): Moat's embedded store against postgrey (Debian
# package), with the ratio; then Moat on 1 against 3 MySQL shards (private MariaDB servers).
#
# Not a timed test: run by hand, copy the figures into bench/RESULTS.md. Everything listens on
# 127.0.0.1, on ports the kernel picked, and lives in a temporary directory removed at the end.
# REQUESTS, CONNECTIONS and MYSQL_REQUESTS override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

requests=${REQUESTS:-40000}
connections=${CONNECTIONS:-16}
mysql_requests=${MYSQL_REQUESTS:-20000}
work=$(mktemp -d /tmp/moat-bench-greylist.XXXXXX)
# postgrey drops to its own user, which must reach its database directory.
chmod 755 "$work"
pids=()
cleanup() {
    # start_moat runs in a command substitution, a subshell: its pids come back through a file.
    if [ -f "$work/pids" ]; then
        while read -r pid; do pids+=("$pid"); done <"$work/pids"
    fi
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "bench: nothing listens on port $1" >&2
    return 1
}
load() { # address requests -> "requests=... per_second=N"
    target/release/examples/policy_load "$1" "$2" "$connections" 7
}
rate() { sed -n 's/.*per_second=\([0-9]*\).*/\1/p'; }

echo "== building (release)"
cargo build --release --bin moat -p moat --quiet
cargo build --release -p moat-greylist --example policy_load --quiet

# Moat with the embedded store, postgrey's defaults.
start_moat() { # data-dir config -> port
    local port
    port=$(free_port)
    target/release/moat greylist policy --listen "127.0.0.1:$port" --data-dir "$1" \
        ${2:+--config "$2"} >"$1.log" 2>&1 &
    echo $! >>"$work/pids"
    wait_port "$port"
    echo "$port"
}

echo "== Moat, embedded store ($requests requests, $connections connections)"
port=$(start_moat "$work/moat-embedded" "")
moat_line=$(load "127.0.0.1:$port" "$requests")
echo "$moat_line"

echo "== postgrey ($(postgrey --version 2>&1 | head -1))"
mkdir -p "$work/postgrey"
chown postgrey "$work/postgrey" 2>/dev/null || true
port=$(free_port)
/usr/sbin/postgrey --inet="127.0.0.1:$port" --dbdir="$work/postgrey" --delay=300 \
    --pidfile="$work/postgrey/pid" >"$work/postgrey.log" 2>&1 &
pids+=($!)
wait_port "$port"
postgrey_line=$(load "127.0.0.1:$port" "$requests")
echo "$postgrey_line"
moat_rate=$(echo "$moat_line" | rate)
postgrey_rate=$(echo "$postgrey_line" | rate)
echo "ratio Moat/postgrey: $(python3 -c "print(round($moat_rate / $postgrey_rate, 1))")"

# MariaDB servers: one installed data directory, copied for each server.
echo "== MariaDB shards ($mysql_requests requests)"
mariadb-install-db --no-defaults --datadir="$work/template" --user=root --skip-test-db \
    --auth-root-authentication-method=normal >/dev/null 2>&1
mysql_ports=()
for n in 1 2 3; do
    dir="$work/shard$n"
    cp -a "$work/template" "$dir"
    p=$(free_port)
    /usr/sbin/mariadbd --no-defaults --datadir="$dir" --port="$p" --bind-address=127.0.0.1 \
        --socket="$dir/sock" --pid-file="$dir/pid" --log-error="$dir/error.log" --user=root \
        --skip-name-resolve --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 &
    pids+=($!)
    wait_port "$p"
    mariadb --no-defaults --socket="$dir/sock" -uroot -e "CREATE DATABASE moat;
        CREATE USER moat@'127.0.0.1' IDENTIFIED BY 'moat'; GRANT ALL ON moat.* TO moat@'127.0.0.1';"
    mysql_ports+=("$p")
done

mysql_config() { # number of shards -> config file
    local file="$work/mysql-$1.toml"
    printf '[greylist]\nstore = "mysql"\n' >"$file"
    for n in $(seq 1 "$1"); do
        printf '[[greylist.shard]]\nname = "shard%s"\nprimary = "mysql://moat:moat@127.0.0.1:%s/moat"\nmax_connections = %s\n' \
            "$n" "${mysql_ports[$((n - 1))]}" "$connections" >>"$file"
    done
    echo "$file"
}

port=$(start_moat "$work/moat-mysql1" "$(mysql_config 1)")
one_line=$(load "127.0.0.1:$port" "$mysql_requests")
echo "1 shard:  $one_line"
port=$(start_moat "$work/moat-mysql3" "$(mysql_config 3)")
three_line=$(load "127.0.0.1:$port" "$mysql_requests")
echo "3 shards: $three_line"
one_rate=$(echo "$one_line" | rate)
three_rate=$(echo "$three_line" | rate)
echo "scaling 3 shards / 1 shard: $(python3 -c "print(round($three_rate / $one_rate, 2))")"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
