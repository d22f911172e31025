#!/usr/bin/env bash
# Greylisting policy decisions per second over the Postfix policy protocol, on one request
# stream (greylist/examples/policy_load.rs): Moat's embedded store against postgrey (Debian
# package), with the ratio; then Moat on 1 against 3 MySQL shards (private MariaDB servers),
# alternately, each MariaDB server held to the same CPU budget. Medians and ratios go into
# this script's section of bench/RESULTS.md.
#
# Not a timed test. Everything listens on 127.0.0.1, on ports the kernel picked, and lives in
# a temporary directory removed at the end. Environment:
#   REQUESTS        [20000] requests per embedded / postgrey run
#   MYSQL_REQUESTS  [20000] requests per MySQL run
#   CONNECTIONS     [64]    policy connections, one request in flight each (Postfix keeps one
#                           per smtpd process; too few and latency, not the shards, limits)
#   POOL            [32]    connections in each shard's pool
#   RUNS            [3]     alternating runs of each pair; medians are reported
#   SHARD_CPU       [25]    each MariaDB server's CPU budget in percent of one core (a cgroup
#                           cpu quota), so that one shard is the bottleneck and three shards
#                           have three budgets, as three servers would; 0 for no budget
#   BENCH_RESULTS   [bench/RESULTS.md] where the section is written
set -euo pipefail
cd "$(dirname "$0")/.."

requests=${REQUESTS:-20000}
mysql_requests=${MYSQL_REQUESTS:-20000}
connections=${CONNECTIONS:-64}
pool=${POOL:-32}
runs=${RUNS:-3}
shard_cpu=${SHARD_CPU:-25}
results=${BENCH_RESULTS:-bench/RESULTS.md}
work=$(mktemp -d /tmp/moat-bench-greylist.XXXXXX)
# postgrey drops to its own user, which must reach its database directory.
chmod 755 "$work"
cgroups=()
cleanup() {
    # Servers started in command substitutions (subshells) report their pids through a file.
    if [ -f "$work/pids" ]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$work/pids"
    fi
    wait 2>/dev/null || true
    sleep 0.5
    for group in "${cgroups[@]}"; do rmdir "$group" 2>/dev/null || true; done
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
load() { # address requests seed -> "requests=... per_second=N p50_ms=... p99_ms=..."
    target/release/examples/policy_load "$1" "$2" "$connections" "$3"
}
field() { # name -> the value of name=... in the line on stdin
    sed -n "s/.* $1=\([0-9.]*\).*/\1/p"
}
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

echo "== building (release)"
cargo build --release --bin moat -p moat --quiet
cargo build --release -p moat-greylist --example policy_load --quiet

start_moat() { # data-dir config -> port
    local port
    port=$(free_port)
    target/release/moat greylist policy --listen "127.0.0.1:$port" --data-dir "$1" \
        ${2:+--config "$2"} >"$1.log" 2>&1 &
    echo $! >>"$work/pids"
    wait_port "$port"
    echo "$port"
}
stop_moat() { # port
    local pid
    pid=$(tail -1 "$work/pids")
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
}

# Moat with the embedded store (durable: every group commit synced) against postgrey, both
# with postgrey's defaults, alternately, each run on a fresh store and its own seed.
echo "== postgrey: $(postgrey --version 2>&1 | head -1)"
embedded_rates=() postgrey_rates=() embedded_p50=() postgrey_p50=()
for run in $(seq 1 "$runs"); do
    port=$(start_moat "$work/moat-embedded-$run" "")
    line=$(load "127.0.0.1:$port" "$requests" "$run")
    stop_moat "$port"
    echo "run $run Moat embedded: $line"
    embedded_rates+=("$(echo "$line" | field per_second)")
    embedded_p50+=("$(echo "$line" | field p50_ms)")

    mkdir -p "$work/postgrey-$run"
    chown postgrey "$work/postgrey-$run" 2>/dev/null || true
    port=$(free_port)
    /usr/sbin/postgrey --inet="127.0.0.1:$port" --dbdir="$work/postgrey-$run" --delay=300 \
        --pidfile="$work/postgrey-$run/pid" >"$work/postgrey-$run.log" 2>&1 &
    echo $! >>"$work/pids"
    wait_port "$port"
    line=$(load "127.0.0.1:$port" "$requests" "$run")
    stop_moat "$port"
    echo "run $run postgrey:      $line"
    postgrey_rates+=("$(echo "$line" | field per_second)")
    postgrey_p50+=("$(echo "$line" | field p50_ms)")
done

# The CPU budget of one shard: a cgroup v1 cpu quota, or a cgroup v2 cpu.max, made here.
cpu_budget=none
make_cgroup() { # name -> the cgroup's directory, or nothing when budgets are not available
    [ "$shard_cpu" -gt 0 ] || return 0
    local quota=$((shard_cpu * 1000))
    if [ -w /sys/fs/cgroup/cpu ] && [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
        mkdir -p "/sys/fs/cgroup/cpu/$1"
        echo 100000 >"/sys/fs/cgroup/cpu/$1/cpu.cfs_period_us"
        echo "$quota" >"/sys/fs/cgroup/cpu/$1/cpu.cfs_quota_us"
        echo "/sys/fs/cgroup/cpu/$1"
    elif [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
        echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
        mkdir -p "/sys/fs/cgroup/$1"
        echo "$quota 100000" >"/sys/fs/cgroup/$1/cpu.max"
        echo "/sys/fs/cgroup/$1"
    fi
}
throttled() { # cgroup directory -> periods in which it was throttled so far
    if [ -f "$1/cpu.stat" ]; then awk '/^nr_throttled/ { print $2 }' "$1/cpu.stat"; else echo 0; fi
}

echo "== MariaDB shards: $(/usr/sbin/mariadbd --version | sed 's/.*Ver \([^ ]*\).*/\1/')"
mariadb-install-db --no-defaults --datadir="$work/template" --user=root --skip-test-db \
    --auth-root-authentication-method=normal >/dev/null 2>&1
mysql_ports=() shard_groups=()
for n in 1 2 3; do
    dir="$work/shard$n"
    cp -a "$work/template" "$dir"
    p=$(free_port)
    group=$(make_cgroup "moat-bench-greylist-$$-shard$n")
    if [ -n "$group" ]; then
        cgroups+=("$group")
        case $group in
        /sys/fs/cgroup/cpu/*) kind="cgroup v1 cpu.cfs_quota_us" ;;
        *) kind="cgroup v2 cpu.max" ;;
        esac
        cpu_budget="${shard_cpu}% of one core per MariaDB server ($kind)"
    fi
    # The shell joins the cgroup, then becomes mariadbd, whose threads all stay in it.
    sh -c 'if [ -n "$1" ]; then echo $$ >"$1/cgroup.procs"; fi; shift; exec "$@"' sh "$group" \
        /usr/sbin/mariadbd --no-defaults --datadir="$dir" --port="$p" --bind-address=127.0.0.1 \
        --socket="$dir/sock" --pid-file="$dir/pid" --log-error="$dir/error.log" --user=root \
        --tmpdir="$dir" --skip-name-resolve --innodb-buffer-pool-size=256M \
        --innodb-flush-log-at-trx-commit=2 --max-connections=500 &
    echo $! >>"$work/pids"
    wait_port "$p"
    mariadb --no-defaults --socket="$dir/sock" -uroot -e "CREATE DATABASE moat;
        CREATE USER moat@'127.0.0.1' IDENTIFIED BY 'moat'; GRANT ALL ON moat.* TO moat@'127.0.0.1';"
    mysql_ports+=("$p")
    shard_groups+=("$group")
done

mysql_config() { # number of shards -> config file
    local file="$work/mysql-$1.toml"
    printf '[greylist]\nstore = "mysql"\n' >"$file"
    for n in $(seq 1 "$1"); do
        printf '[[greylist.shard]]\nname = "shard%s"\nprimary = "mysql://moat:moat@127.0.0.1:%s/moat"\nmax_connections = %s\n' \
            "$n" "${mysql_ports[$((n - 1))]}" "$pool" >>"$file"
    done
    echo "$file"
}
statements() { # -> statements executed so far by all three servers
    local total=0 n
    for n in 1 2 3; do
        total=$((total + $(mariadb --no-defaults --socket="$work/shard$n/sock" -uroot -N -B \
            -e "SHOW GLOBAL STATUS LIKE 'Com_stmt_execute'" | awk '{ print $2 }')))
    done
    echo "$total"
}
mysql_run() { # shards seed -> load line, statements per decision, throttled share of shard 1
    local port line before after throttled_before throttled_after
    port=$(start_moat "$work/moat-mysql-$1-$2" "$(mysql_config "$1")")
    # A few requests first, so that each shard's schema is made outside the measured run.
    load "127.0.0.1:$port" 200 "$((1000 + $2))" >/dev/null
    before=$(statements)
    throttled_before=$( [ -n "${shard_groups[0]}" ] && throttled "${shard_groups[0]}" || echo 0)
    line=$(load "127.0.0.1:$port" "$mysql_requests" "$2")
    after=$(statements)
    throttled_after=$( [ -n "${shard_groups[0]}" ] && throttled "${shard_groups[0]}" || echo 0)
    stop_moat "$port"
    local seconds
    seconds=$(echo "$line" | field seconds)
    echo "$line statements_per_decision=$(python3 -c "print(f'{($after - $before) / $mysql_requests:.2f}')") \
shard1_throttled=$(python3 -c "print(f'{($throttled_after - $throttled_before) / ($seconds * 10):.0%}')")"
}

one_rates=() three_rates=() one_p50=() three_p50=() one_stmts=() three_stmts=()
one_throttled=() three_throttled=()
for run in $(seq 1 "$runs"); do
    # Each run its own seed, so every run's triplets are new to every shard.
    line=$(mysql_run 1 "$((10 + 2 * run))")
    echo "run $run 1 shard:  $line"
    one_rates+=("$(echo "$line" | field per_second)")
    one_p50+=("$(echo "$line" | field p50_ms)")
    one_stmts+=("$(echo "$line" | field statements_per_decision)")
    one_throttled+=("$(echo "$line" | sed -n 's/.*shard1_throttled=\([0-9]*%\).*/\1/p')")
    line=$(mysql_run 3 "$((11 + 2 * run))")
    echo "run $run 3 shards: $line"
    three_rates+=("$(echo "$line" | field per_second)")
    three_p50+=("$(echo "$line" | field p50_ms)")
    three_stmts+=("$(echo "$line" | field statements_per_decision)")
    three_throttled+=("$(echo "$line" | sed -n 's/.*shard1_throttled=\([0-9]*%\).*/\1/p')")
done

embedded=$(median "${embedded_rates[@]}")
postgrey=$(median "${postgrey_rates[@]}")
one=$(median "${one_rates[@]}")
three=$(median "${three_rates[@]}")
echo "ratio Moat embedded / postgrey: $(ratio "$embedded" "$postgrey")"
echo "scaling 3 shards / 1 shard:     $(ratio "$three" "$one")"

section=$(cat <<SECTION
## Greylisting policy decisions per second (bench/greylist.sh)

Run $(date -u '+%Y-%m-%d %H:%M') UTC on $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, load
average before the run $(cut -d' ' -f1-3 /proc/loadavg) (a machine shared with other sessions).
Moat $(git rev-parse --short HEAD) (uncommitted work included), release build;
$(postgrey --version 2>&1 | head -1); MariaDB $(/usr/sbin/mariadbd --version | sed 's/.*Ver \([^ ]*\).*/\1/').
One request stream (\`greylist/examples/policy_load.rs\`) over $connections connections that
each wait for their reply, as Postfix's smtpd processes do; every triplet comes twice (a first
attempt, a write, and an early retry, a read), so every answer is a deferral. Medians of $runs
alternating runs, each on a fresh store with its own seed (each run in brackets).

| server | requests | decisions/s | p50 latency ms |
|---|---|---|---|
| Moat, embedded store (durable) | $requests | $embedded (${embedded_rates[*]}) | $(median "${embedded_p50[@]}") |
| postgrey, same stream | $requests | $postgrey (${postgrey_rates[*]}) | $(median "${postgrey_p50[@]}") |
| **ratio** | | **$(ratio "$embedded" "$postgrey")×** | |

| MySQL store | requests | decisions/s | p50 latency ms | statements per decision | shard 1 throttled |
|---|---|---|---|---|---|
| Moat, 1 shard | $mysql_requests | $one (${one_rates[*]}) | $(median "${one_p50[@]}") | $(median "${one_stmts[@]}") | ${one_throttled[*]} |
| Moat, 3 shards | $mysql_requests | $three (${three_rates[*]}) | $(median "${three_p50[@]}") | $(median "${three_stmts[@]}") | ${three_throttled[*]} |
| **scaling 3 / 1** | | **$(ratio "$three" "$one")×** | | | |

CPU budget: $cpu_budget. The three MariaDB servers, Moat and the load generator share this
machine's cores, so more shards cannot add CPU here. To model "each shard is its own server"
every MariaDB server runs in a cgroup of its own with the same CPU quota, so that one shard is
the bottleneck and three shards have three budgets. "Shard 1 throttled" is the share of 100 ms
periods in which the first shard's quota ran out: near 100% means the shard was the limit.
"Statements per decision" counts prepared statements executed by all servers.
SECTION
)

begin_mark="<!-- bench/greylist.sh: begin -->"
end_mark="<!-- bench/greylist.sh: end -->"
[ -f "$results" ] || printf '# Moat benchmark results\n' >"$results"
# The section goes where the old one was (or at the end), everything else untouched.
python3 - "$results" "$begin_mark" "$end_mark" "$section" <<'PY'
import sys
path, begin, end, section = sys.argv[1:]
text = open(path).read()
block = f"{begin}\n{section}\n{end}"
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    text = head + block + tail
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(path, "w").write(text)
PY
echo "results written to $results"
