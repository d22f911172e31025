#!/usr/bin/env bash
# DNSBL serving: Moat against rbldnsd on the same generated data, on this machine.
#
# Generates BENCH_ENTRIES random IPv4 addresses (an ip4set zone bl.test) and BENCH_DOMAINS
# names (a dnset zone dbl.test), starts rbldnsd and `moat dnsbl serve` on loopback ports, and
# measures for each: load time (start to first answer), resident memory, and with dnsperf the
# queries per second and latency of a query mix (45% listed addresses, 45% unlisted, 10%
# domains). The two sides run alternately, BENCH_RUNS times each, and medians are reported:
# the machine is shared and noisy. Because dnsperf runs on the same cores, queries per second
# are bounded by the client as much as by the server; the server's CPU time per query is
# measured too (queries answered per CPU-second of the server), which is the capacity figure.
# Then both reload their full dataset three times while dnsperf runs, and the failed queries
# (lost, or answered with anything but NOERROR/NXDOMAIN) are counted.
#
# Usage (from anywhere; Debian's rbldnsd, dnsperf and dnsutils packages, see scripts/setup):
#   bench/dnsbl.sh
# Knobs, from the environment (defaults in brackets):
#   BENCH_ENTRIES     [1000000]  ip4set entries
#   BENCH_DOMAINS     [100000]   dnset entries
#   BENCH_SECONDS     [10]       seconds per dnsperf run
#   BENCH_RUNS        [3]        runs per side
#   BENCH_CLIENTS     [8]        dnsperf clients (source ports) per dnsperf thread
#   BENCH_THREADS     [1 2]      dnsperf thread counts to measure with, in turn
#   BENCH_OUTSTANDING [200]      dnsperf queries in flight per dnsperf thread
#   BENCH_UDP_SOCKETS [2]        Moat's UDP sockets (threads)
#   BENCH_HICKORY     [1]        1 also measures Moat with hickory-server's UDP path
#   BENCH_RESULTS     [bench/RESULTS.md] where the section of results is written
#   BENCH_KEEP        [0]        1 keeps the temporary folder
#
# Every process started here is stopped by its pid on exit. Only loopback is used.
set -euo pipefail

ENTRIES=${BENCH_ENTRIES:-1000000}
DOMAINS=${BENCH_DOMAINS:-100000}
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
RUNS=${BENCH_RUNS:-3}
CLIENTS=${BENCH_CLIENTS:-8}
THREADS=${BENCH_THREADS:-1 2}
OUTSTANDING=${BENCH_OUTSTANDING:-200}
UDP_SOCKETS=${BENCH_UDP_SOCKETS:-2}
HICKORY=${BENCH_HICKORY:-1}
KEEP=${BENCH_KEEP:-0}

root=$(cd "$(dirname "$0")/.." && pwd)
results=${BENCH_RESULTS:-$root/bench/RESULTS.md}
moat=$root/target/release/moat
for tool in rbldnsd dnsperf dig python3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (scripts/setup installs it)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/moat-bench-dnsbl.XXXXXX")
chmod 755 "$work"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    # A server busy reloading may take a moment; none is left behind.
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ "$KEEP" = 1 ]; then echo "bench: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "== building moat (release)"
(cd "$root" && cargo build --release --quiet)

echo "== generating $ENTRIES ip4set entries and $DOMAINS dnset names in $work"
generate() {
    # $1: a variant number (0 for the first data, which also writes the dnset and the queries),
    # so that a reload gets data of the same size that differs; $2: the ip4set file to write.
    python3 - "$work" "$ENTRIES" "$DOMAINS" "$1" "$2" <<'PY'
import os, random, sys
work, entries, domains, extra, target = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
random.seed(42)
header = "$SOA 0 ns1.bl.test hostmaster.bl.test 0 1h 1h 2d 1h\n$NS 1d ns1.bl.test\n"
ips = set()
while len(ips) < entries:
    ips.add(random.getrandbits(32))
ips = sorted(ips)
random.shuffle(ips)
def dotted(ip):
    return "%d.%d.%d.%d" % (ip >> 24, (ip >> 16) & 255, (ip >> 8) & 255, ip & 255)
with open(target + ".tmp", "w") as f:
    f.write(header + ":2:Listed, see http://bl.test/lookup?$\n")
    f.writelines(dotted(ip) + "\n" for ip in ips)
    f.write("192.0.2.%d\n" % (extra % 256))
os.rename(target + ".tmp", target)
names = ["d%07d.example%d.com" % (i, i % 97) for i in range(domains)]
if extra == 0:
    with open(os.path.join(work, "dnset.txt"), "w") as f:
        f.write(header + ":2:Domain $ listed\n")
        f.writelines(n + "\n" for n in names)
    with open(os.path.join(work, "queries.txt"), "w") as f:
        for i in range(200000):
            r = random.random()
            if r < 0.45:
                ip = random.choice(ips)
            elif r < 0.9:
                ip = random.getrandbits(32)
            else:
                name = random.choice(names) if random.random() < 0.5 else "x%d.example.net" % i
                f.write("%s.dbl.test A\n" % name)
                continue
            f.write("%d.%d.%d.%d.bl.test A\n" % (ip & 255, (ip >> 8) & 255, (ip >> 16) & 255, ip >> 24))
PY
}
generate 0 "$work/ip4set.txt"
for variant in 1 2 3; do
    generate "$variant" "$work/ip4set.$variant"
done
zones=("bl.test:ip4set:$work/ip4set.txt" "dbl.test:dnset:$work/dnset.txt")

free_port() {
    python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }
# Waits until $1 answers bl.test SOA; prints the seconds since $2.
wait_ready() {
    local port=$1 start=$2
    for _ in $(seq 1 1200); do
        if dig +short +tries=1 +time=1 +noedns @127.0.0.1 -p "$port" bl.test SOA 2>/dev/null | grep -q ns1; then
            printf '%.3f\n' "$(echo "$(now) - $start" | bc)"
            return
        fi
        sleep 0.05
    done
    echo "bench: server on port $port did not start" >&2
    exit 1
}
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)

run_as=()
[ "$(id -u)" -eq 0 ] && run_as=(-u nobody)
start_rbldnsd() {
    rbldnsd_port=$(free_port)
    local start; start=$(now)
    rbldnsd -n "${run_as[@]}" -b "127.0.0.1/$rbldnsd_port" "${zones[@]}" >"$work/rbldnsd.log" 2>&1 &
    rbldnsd_pid=$!
    pids+=("$rbldnsd_pid")
    rbldnsd_load=$(wait_ready "$rbldnsd_port" "$start")
    rbldnsd_rss=$(rss_mb "$rbldnsd_pid")
}
start_moat() {
    # $1: udp engine
    local port; port=$(free_port)
    local start; start=$(now)
    RUST_LOG=warn,moat_dnsbl=info "$moat" dnsbl serve --listen "127.0.0.1:$port" --udp-sockets "$UDP_SOCKETS" \
        --udp-engine "$1" --check-interval 0 "${zones[@]/#/--zone=}" >"$work/moat-$1.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    moat_port=$port moat_pid=$pid
    moat_load=$(wait_ready "$port" "$start")
    moat_rss=$(rss_mb "$pid")
}

# One dnsperf run against port $1 (server pid $2, run length $3, dnsperf threads $4): prints
# "qps avg_latency_ms lost failed queries_per_cpu_second".
measure() {
    local port=$1 pid=$2 length=$3 threads=${4:-1} out c0 c1
    c0=$(cpu_ticks "$pid")
    out=$(dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries.txt" -l "$length" -c $((CLIENTS * threads)) \
        -T "$threads" -q $((OUTSTANDING * threads)) 2>&1)
    c1=$(cpu_ticks "$pid")
    echo "$out" >>"$work/dnsperf.log"
    echo "$out" | awk -v ticks=$((c1 - c0)) -v hz="$ticks_per_second" '
        /Queries completed:/ { done = $3 }
        /Queries lost:/ { lost = $3 }
        /Response codes:/ { for (i = 3; i <= NF; i += 3) { code = $i; n = $(i + 1);
            if (code != "NOERROR" && code != "NXDOMAIN") failed += n } }
        /Queries per second:/ { qps = $4 }
        /Average Latency/ { lat = $4 * 1000 }
        END { printf "%.0f %.3f %d %d %.0f\n", qps, lat, lost, failed, (ticks > 0 ? done * hz / ticks : 0) }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med() { tr ' ' '\n' <<<"$1" | grep . | median; }

echo "== starting rbldnsd and moat"
start_rbldnsd
start_moat fast
echo "   rbldnsd: load ${rbldnsd_load}s, RSS ${rbldnsd_rss} MB; moat: load ${moat_load}s, RSS ${moat_rss} MB"
moat_bytes=$(grep -o 'dataset=ip4set[^ ]* parts= entries=[0-9]* bytes_per_entry=[0-9.]*' "$work/moat-fast.log" | sed 's/.*bytes_per_entry=//')
rbldnsd_mem=$(grep -o 'mmap=[0-9]* Kb' "$work/rbldnsd.log" | head -1 | grep -o '[0-9]*')

rows=""
failures_rbldnsd=0 failures_moat=0
for threads in $THREADS; do
    declare -A qps=() lat=() cpu=()
    for run in $(seq 1 "$RUNS"); do
        for side in rbldnsd moat; do
            if [ "$side" = rbldnsd ]; then port=$rbldnsd_port pid=$rbldnsd_pid; else port=$moat_port pid=$moat_pid; fi
            read -r q l lo f c < <(measure "$port" "$pid" "$SECONDS_PER_RUN" "$threads")
            echo "   dnsperf -T $threads, run $run, $side: $q qps, $l ms average, lost $lo, failed $f, $c queries per CPU-second"
            qps[$side]+="$q "; lat[$side]+="$l "; cpu[$side]+="$c "
            if [ "$side" = rbldnsd ]; then
                failures_rbldnsd=$((failures_rbldnsd + lo + f))
            else
                failures_moat=$((failures_moat + lo + f))
            fi
        done
    done
    rq=$(med "${qps[rbldnsd]}") mq=$(med "${qps[moat]}")
    row="| -T $threads -c $((CLIENTS * threads)) -q $((OUTSTANDING * threads))"
    row+=" | $rq (${qps[rbldnsd]% }) | $mq (${qps[moat]% }) | **$(echo "scale=2; $mq / $rq" | bc)**"
    row+=" | $(med "${lat[rbldnsd]}") / $(med "${lat[moat]}") | $(med "${cpu[rbldnsd]}") / $(med "${cpu[moat]}") |"
    rows+="$row"$'\n'
done

hickory_line="not measured (BENCH_HICKORY=0)"
if [ "$HICKORY" = 1 ]; then
    fast_port=$moat_port fast_pid=$moat_pid fast_load=$moat_load fast_rss=$moat_rss
    start_moat hickory
    read -r hq hl _ _ hc < <(measure "$moat_port" "$moat_pid" "$SECONDS_PER_RUN" 1)
    kill "$moat_pid"
    hickory_line="$hq qps, $hl ms average, $hc queries per CPU-second"
    echo "   moat with hickory-server's UDP path: $hickory_line"
    moat_port=$fast_port moat_pid=$fast_pid moat_load=$fast_load moat_rss=$fast_rss
fi

# Reload under load: dnsperf runs 20 s; at 4, 9 and 14 s a prepared variant of the full ip4set
# (same size, other data) is renamed into place, as operators must, and the server signalled.
reload_under_load() {
    local port=$1 pid=$2
    measure "$port" "$pid" 20 >"$work/reload-$pid.out" &
    local measuring=$!
    sleep 4
    for variant in 1 2 3; do
        cp "$work/ip4set.$variant" "$work/ip4set.next"
        mv "$work/ip4set.next" "$work/ip4set.txt"
        kill -HUP "$pid"
        [ "$variant" -lt 3 ] && sleep 5
    done
    wait "$measuring"
    cat "$work/reload-$pid.out"
}
echo "== reloading the full dataset 3 times under load"
read -r mq _ mlost mfailed _ < <(reload_under_load "$moat_port" "$moat_pid")
for _ in $(seq 1 100); do
    [ "$(grep -c 'zones reloaded' "$work/moat-fast.log" || true)" -ge 3 ] && break
    sleep 0.1
done
mreloads=$(grep -c 'zones reloaded' "$work/moat-fast.log" || true)
echo "   moat: $mq qps during reloads, lost $mlost, failed $mfailed, reloads logged $mreloads"
read -r rq _ rlost rfailed _ < <(reload_under_load "$rbldnsd_port" "$rbldnsd_pid")
echo "   rbldnsd: $rq qps during reloads, lost $rlost, failed $rfailed"

cpus=$(nproc)
model=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
load=$(cut -d' ' -f1-3 /proc/loadavg)
section=$(cat <<MD
<!-- dnsbl:start -->
## DNSBL serving: Moat against rbldnsd

$(date -u +%Y-%m-%d), $cpus CPUs ($model), load average before the runs $load; Moat
$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown) (uncommitted work included),
rbldnsd $(dpkg-query -W -f='${Version}' rbldnsd 2>/dev/null || echo '?'), dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ {print $2}').
Command: \`bench/dnsbl.sh\` with $ENTRIES ip4set entries and $DOMAINS dnset names, queries 45%
listed addresses, 45% unlisted, 10% domains; dnsperf \`-l $SECONDS_PER_RUN\`, medians of $RUNS
alternating runs (each run in brackets); Moat with $UDP_SOCKETS UDP sockets. dnsperf shares the
two cores with the server, so queries per second are bounded by the client as much as by the
server; "per CPU-second" is queries answered per second of the server's own CPU time (user
and system, from /proc/PID/stat), the fair per-core comparison.

| dnsperf | rbldnsd qps | Moat qps | Moat / rbldnsd | latency ms, rbldnsd / Moat | queries per CPU-second, rbldnsd / Moat |
|---|---|---|---|---|---|
${rows}
| | rbldnsd | Moat |
|---|---|---|
| load time, start to first answer (s) | $rbldnsd_load | $moat_load |
| resident memory after load (MB) | $rbldnsd_rss | $moat_rss |
| index bytes per ip4set entry | 16 (an address and a pointer; ${rbldnsd_mem:-?} KB mmap in all) | $moat_bytes |
| lost or failed queries in all runs | $failures_rbldnsd | $failures_moat |

Moat with hickory-server's UDP path instead of its own loop (same answers): $hickory_line.

Reload of the full dataset three times (regenerated, renamed into place, SIGHUP) during 20 s of
dnsperf: Moat $mq qps, lost $mlost, failed $mfailed ($mreloads reloads logged); rbldnsd $rq qps,
lost $rlost, failed $rfailed. rbldnsd answers nothing while it loads (it is single-threaded);
Moat loads aside and swaps.
<!-- dnsbl:end -->
MD
)
if [ -f "$results" ] && grep -q '<!-- dnsbl:start -->' "$results"; then
    python3 - "$results" "$section" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r"<!-- dnsbl:start -->.*?<!-- dnsbl:end -->", lambda m: section, text, flags=re.S)
open(path, "w").write(text)
PY
else
    [ -f "$results" ] || printf '# Benchmark results\n' >"$results"
    printf '\n%s\n' "$section" >>"$results"
fi
echo "== written to $results"
echo "$section"
