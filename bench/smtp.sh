#!/usr/bin/env bash
# Relay throughput of Moat against Postfix, end to end, on this machine.
#
# smtp-source sends BENCH_MESSAGES messages over BENCH_SESSIONS parallel sessions to one of the
# two relays, which forwards them to one shared smtp-sink. The clock runs from the start of
# smtp-source until smtp-sink has received the last message, so a figure counts delivered mail,
# not mail merely accepted. Both relays keep their queue on the same disk, and both fsync it
# before they answer 250 to DATA. The two sides run alternately, BENCH_RUNS times each per
# message size, and the medians are reported: the machine is shared and noisy.
#
# Usage (as root, from anywhere; Debian's postfix package gives smtp-source, smtp-sink, postfix):
#   bench/smtp.sh
# Knobs, from the environment (defaults in brackets):
#   BENCH_MESSAGES [10000]        messages per run
#   BENCH_SESSIONS [20]           parallel smtp-source sessions
#   BENCH_SIZES    [2048 51200]   message body sizes in octets (smtp-source -l)
#   BENCH_RUNS     [3]            runs per side and size
#   BENCH_SIDES    [moat postfix] which relays to measure
#   BENCH_REUSE    [0]            1 sends all of a session's messages over one connection (-d)
#   BENCH_WARMUP   [200]          unmeasured messages per side before the first run
#   BENCH_TIMEOUT  [600]          seconds one run may take before the bench gives up
#   BENCH_TMPDIR   [/var/tmp]     where the queues live; must be a real disk, not tmpfs
#   BENCH_KEEP     [0]            1 keeps the temporary folder (logs, queues) after the run
#   BENCH_RESULTS  [bench/RESULTS.md] where the section of results is written
#
# The Postfix instance is a throwaway one with its own config_directory and queue_directory in
# the temporary folder; the system's Postfix is neither configured nor started. Every process
# started here is stopped by its pid on exit.
set -euo pipefail

MESSAGES=${BENCH_MESSAGES:-10000}
SESSIONS=${BENCH_SESSIONS:-20}
SIZES=${BENCH_SIZES:-2048 51200}
RUNS=${BENCH_RUNS:-3}
SIDES=${BENCH_SIDES:-moat postfix}
REUSE=${BENCH_REUSE:-0}
WARMUP=${BENCH_WARMUP:-200}
RUN_TIMEOUT=${BENCH_TIMEOUT:-600}
KEEP=${BENCH_KEEP:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=${BENCH_RESULTS:-$ROOT/bench/RESULTS.md}
DOMAIN=bench.example
SENDER=sender@example.org
RECIPIENT=rcpt@$DOMAIN

# The test domain and addresses are documentation names (RFC 2606); nothing leaves loopback.

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

now() { date +%s.%N; }

# A free TCP port on 127.0.0.1, found by binding port 0. Another process could take it before
# we bind it ourselves; on a quiet machine that does not happen in practice.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- Checks -----------------------------------------------------------------------------------

[[ $EUID -eq 0 ]] || die "run as root: the Postfix instance needs it (mail_owner=postfix)"
for tool in smtp-source smtp-sink postfix postconf python3 cargo; do
    command -v "$tool" >/dev/null || die "missing tool: $tool"
done
[[ " $SIDES " == *" moat "* || " $SIDES " == *" postfix "* ]] ||
    die "BENCH_SIDES names neither moat nor postfix: $SIDES"

mkdir -p "${BENCH_TMPDIR:-/var/tmp}"
TMP=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/moat-bench.XXXXXX")
# Postfix daemons run as the postfix user and must reach the queue below this folder.
chmod 755 "$TMP"
FSTYPE=$(findmnt -n -o FSTYPE -T "$TMP" 2>/dev/null || stat -f -c %T "$TMP")
[[ $FSTYPE != tmpfs ]] || die "$TMP is on tmpfs: fsync costs nothing there; set BENCH_TMPDIR"

# --- Cleanup ----------------------------------------------------------------------------------

BUILD_PID=""
SINK_PID=""
MOAT_PID=""
SOURCE_PID=""
POSTFIX_STARTED=0
PF_CONF=$TMP/postfix
PF_QUEUE=$TMP/postfix-queue

stop_pid() {
    local pid=$1
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    stop_pid "$BUILD_PID"
    stop_pid "$SOURCE_PID"
    if [[ $POSTFIX_STARTED == 1 ]]; then
        local master
        master=$(tr -d ' ' <"$PF_QUEUE/pid/master.pid" 2>/dev/null)
        postfix -c "$PF_CONF" stop >/dev/null 2>&1
        # `postfix stop` returns before the master is gone; make sure it is.
        stop_pid "$master"
    fi
    stop_pid "$MOAT_PID"
    stop_pid "$SINK_PID"
    wait 2>/dev/null
    if [[ $KEEP == 1 || $rc != 0 ]]; then
        log "kept $TMP (logs, queues)"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- smtp-sink --------------------------------------------------------------------------------

# -c prints "sess=N quit=N mesg=N" followed by CR each time a message ends; the last such record
# in the file is the number of messages received so far.
SINK_PORT=$(free_port)
SINK_OUT=$TMP/smtp-sink.out
SINK_CMD=(smtp-sink -c -u nobody 127.0.0.1:"$SINK_PORT" 1000)
"${SINK_CMD[@]}" >"$SINK_OUT" 2>&1 &
SINK_PID=$!

sink_count() {
    local count
    count=$(tail -c 64 "$SINK_OUT" | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -n 1) || true
    count=${count#mesg=}
    echo "${count:-0}"
}

wait_for_port() {
    local port=$1 what=$2
    for _ in $(seq 1 100); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1)" \
            2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "$what is not listening on 127.0.0.1:$port"
}
wait_for_port "$SINK_PORT" smtp-sink
# The probe above is one session and no message: counts stay at mesg=0.

# --- Moat -------------------------------------------------------------------------------------

MOAT_PORT=""
MOAT_LOG=$TMP/moat.log
MOAT_CONF=$TMP/moat.toml

start_moat() {
    log "building Moat (release)"
    # In the background and waited for, so that an interrupt is handled at once, not after the
    # build (bash runs traps only between foreground commands).
    (cd "$ROOT" && exec cargo build --release --bin moat) >&2 &
    BUILD_PID=$!
    wait "$BUILD_PID" || die "cargo build failed"
    BUILD_PID=""
    local bin=$ROOT/target/release/moat

    cat >"$MOAT_CONF" <<EOF
data_dir = "$TMP/moat-data"
hostname = "moat.bench.example"

[smtp]
listen = ["127.0.0.1:0"]
# The bench is one client address that opens many sessions without waiting to be greeted.
pregreet_wait = "0s"
max_sessions_per_ip = 1000

[[domain]]
name = "$DOMAIN"
route = "smtp:127.0.0.1:$SINK_PORT"
EOF
    "$bin" serve --config "$MOAT_CONF" 2>"$MOAT_LOG" &
    MOAT_PID=$!

    # Moat logs one line with "listening" and addr=IP:PORT per listener.
    local addr=""
    for _ in $(seq 1 300); do
        kill -0 "$MOAT_PID" 2>/dev/null || {
            tail -n 20 "$MOAT_LOG" >&2
            die "moat exited during start"
        }
        addr=$(grep 'listening' "$MOAT_LOG" | grep -o 'addr=[0-9.]*:[0-9]*' | head -n 1) || true
        [[ -n $addr ]] && break
        sleep 0.1
    done
    [[ -n $addr ]] || die "moat logged no listening address; see $MOAT_LOG"
    MOAT_PORT=${addr##*:}
    log "moat pid $MOAT_PID on 127.0.0.1:$MOAT_PORT"
}

# --- Postfix ----------------------------------------------------------------------------------

POSTFIX_PORT=""
PF_LOG=$TMP/postfix.log

start_postfix() {
    POSTFIX_PORT=$(free_port)
    mkdir -p "$PF_CONF" "$PF_QUEUE" "$TMP/postfix-data"
    chown postfix "$TMP/postfix-data"

    # Defaults everywhere except: loopback only, no local delivery, relay of the one domain to
    # smtp-sink, no DNS, and the per-client limits lifted since every session comes from one
    # address. Queue files are fsynced as always in Postfix.
    cat >"$PF_CONF/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF_QUEUE
data_directory = $TMP/postfix-data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.example
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
local_transport = error:local delivery is disabled
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = $DOMAIN
relayhost = [127.0.0.1]:$SINK_PORT
smtp_dns_support_level = disabled
smtp_host_lookup = native
default_process_limit = 100
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
maillog_file = $PF_LOG
maillog_file_prefixes = $TMP
biff = no
EOF
    # No chroot: the queue is a throwaway folder without the files a chroot would need.
    cat >"$PF_CONF/master.cf" <<EOF
127.0.0.1:$POSTFIX_PORT inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
    # `postfix check` creates the queue folders; its complaints go to the log file, not stderr.
    postfix -c "$PF_CONF" check || {
        tail -n 20 "$PF_LOG" >&2 || true
        die "postfix check failed"
    }
    POSTFIX_STARTED=1
    postfix -c "$PF_CONF" start >&2 || {
        tail -n 20 "$PF_LOG" >&2 || true
        die "postfix start failed"
    }
    wait_for_port "$POSTFIX_PORT" postfix
    log "postfix on 127.0.0.1:$POSTFIX_PORT"
}

# --- One measurement --------------------------------------------------------------------------

SOURCE_FLAGS=(-s "$SESSIONS")
# Each mode has its own section in the results file, so both can be kept side by side.
if [[ $REUSE == 1 ]]; then
    SOURCE_FLAGS+=(-d)
    MODE="connections reused"
    MODE_TEXT="Each session sends all its messages over one connection (smtp-source -d)."
else
    MODE="one connection per message"
    MODE_TEXT="One connection per message, as smtp-source does without -d, as an MX mostly sees."
fi

port_of() {
    case $1 in
        moat) echo "$MOAT_PORT" ;;
        postfix) echo "$POSTFIX_PORT" ;;
    esac
}

# Sends $3 messages of $2 octets to side $1 and sets ACCEPT_SECONDS (until smtp-source had its
# last reply) and TOTAL_SECONDS (until smtp-sink had the last message). Runs in the main shell,
# not a subshell, so that `die` stops the bench and the exit trap sees SOURCE_PID.
ACCEPT_SECONDS=""
TOTAL_SECONDS=""
measure() {
    local side=$1 size=$2 count=$3
    local port target t0 t_accept="" t_done="" rc elapsed
    port=$(port_of "$side")
    target=$(($(sink_count) + count))
    local out=$TMP/smtp-source.$side.$size.out

    t0=$(now)
    smtp-source "${SOURCE_FLAGS[@]}" -m "$count" -l "$size" -f "$SENDER" -t "$RECIPIENT" \
        127.0.0.1:"$port" >"$out" 2>&1 &
    SOURCE_PID=$!

    while [[ -z $t_accept || -z $t_done ]]; do
        if [[ -z $t_done ]] && (($(sink_count) >= target)); then
            t_done=$(now)
        fi
        if [[ -z $t_accept ]] && ! kill -0 "$SOURCE_PID" 2>/dev/null; then
            rc=0
            wait "$SOURCE_PID" || rc=$?
            SOURCE_PID=""
            t_accept=$(now)
            if [[ $rc != 0 ]]; then
                cat "$out" >&2
                die "$side: smtp-source failed (exit $rc) at size $size; see $out"
            fi
        fi
        elapsed=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%d", b - a }')
        if ((elapsed > RUN_TIMEOUT)); then
            die "$side: after ${RUN_TIMEOUT}s smtp-sink has $(sink_count) of $target messages"
        fi
        sleep 0.05
    done
    ACCEPT_SECONDS=$(awk -v a="$t0" -v b="$t_accept" 'BEGIN { printf "%.3f", b - a }')
    TOTAL_SECONDS=$(awk -v a="$t0" -v b="$t_done" 'BEGIN { printf "%.3f", b - a }')
}

# Moat and Postfix finish queue work after smtp-sink has the last message (removing queue
# files, closing cached connections). Give that a moment so it is not charged to the next run.
settle() { sleep 2; }

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# --- The runs ---------------------------------------------------------------------------------

[[ " $SIDES " == *" moat "* ]] && start_moat
[[ " $SIDES " == *" postfix "* ]] && start_postfix

declare -A RATES ACCEPT_RATES
if ((WARMUP > 0)); then
    for side in $SIDES; do
        log "warm-up: $WARMUP messages to $side"
        measure "$side" 1024 "$WARMUP"
        settle
    done
fi

for size in $SIZES; do
    for run in $(seq 1 "$RUNS"); do
        # Alternate which side goes first, so neither always runs on a freshly settled machine.
        order=$SIDES
        ((run % 2 == 0)) && order=$(echo "$SIDES" | tr ' ' '\n' | tac | tr '\n' ' ')
        for side in $order; do
            measure "$side" "$size" "$MESSAGES"
            accept=$ACCEPT_SECONDS total=$TOTAL_SECONDS
            rate=$(awk -v n="$MESSAGES" -v t="$total" 'BEGIN { printf "%.0f", n / t }')
            accept_rate=$(awk -v n="$MESSAGES" -v t="$accept" 'BEGIN { printf "%.0f", n / t }')
            RATES[$side.$size]+="$rate "
            ACCEPT_RATES[$side.$size]+="$accept_rate "
            log "size $size run $run $side: ${total}s end to end ($rate msg/s)," \
                "${accept}s accepted ($accept_rate msg/s)"
            settle
        done
    done
done

# --- Report -----------------------------------------------------------------------------------

# Anything either relay logged as a problem during the bench.
MOAT_PROBLEMS=n/a
POSTFIX_PROBLEMS=n/a
[[ -n $MOAT_PID ]] && MOAT_PROBLEMS=$(grep -ciE '\b(warn|error)\b' "$MOAT_LOG" || true)
[[ $POSTFIX_STARTED == 1 ]] &&
    POSTFIX_PROBLEMS=$(grep -cE 'status=(deferred|bounced)|fatal:|panic:' "$PF_LOG" || true)

cell() {
    local runs=${1% }
    [[ -n $runs ]] || {
        echo "-"
        return
    }
    echo "**$(echo "$runs" | median)** (${runs// /, })"
}

table() {
    echo "| body size | sessions | messages | Moat msg/s | Postfix msg/s | Moat/Postfix |"
    echo "|---:|---:|---:|---:|---:|---:|"
    for size in $SIZES; do
        local m=${RATES[moat.$size]:-} p=${RATES[postfix.$size]:-} ratio="-"
        if [[ -n $m && -n $p ]]; then
            ratio=$(awk -v a="$(echo "$m" | median)" -v b="$(echo "$p" | median)" \
                'BEGIN { printf "%.2f", a / b }')
        fi
        echo "| $size B | $SESSIONS | $MESSAGES | $(cell "$m") | $(cell "$p") | $ratio |"
    done
}

accept_table() {
    echo "| body size | Moat msg/s | Postfix msg/s |"
    echo "|---:|---:|---:|"
    for size in $SIZES; do
        echo "| $size B | $(cell "${ACCEPT_RATES[moat.$size]:-}")" \
            "| $(cell "${ACCEPT_RATES[postfix.$size]:-}") |"
    done
}

REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
DIRTY=$(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l)
SOURCE_SHOWN="smtp-source ${SOURCE_FLAGS[*]} -m $MESSAGES -l SIZE -f $SENDER -t $RECIPIENT 127.0.0.1:PORT"

section() {
    cat <<EOF
## SMTP relay throughput, Moat and Postfix, $MODE (bench/smtp.sh)

Run $(date -u '+%Y-%m-%d %H:%M UTC') at Moat $REV ($DIRTY files changed or untracked).

End to end: from the start of smtp-source until smtp-sink had received every message. Median of
$RUNS alternating runs in bold, each run in brackets. Bodies are the given size plus about 200
octets of headers from smtp-source.
$MODE_TEXT

$(table)

Acceptance alone (until smtp-source had its last 250 and quit):

$(accept_table)

Lines Moat logged at warn or error: $MOAT_PROBLEMS. Postfix deliveries deferred or bounced, and
fatal or panic lines: $POSTFIX_PROBLEMS.

Machine: $(nproc) cores, $(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'),
$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory, kernel $(uname -r),
queues on $(df -P "$TMP" | awk 'NR == 2 { print $1 }') ($FSTYPE). Postfix $(postconf -d -h mail_version).

Commands:

\`\`\`
${SINK_CMD[*]/:$SINK_PORT/:SINKPORT}
$SOURCE_SHOWN
target/release/moat serve --config moat.toml
postfix -c CONFIG_DIR start
\`\`\`

moat.toml (SINKPORT is smtp-sink's port):

\`\`\`toml
$(sed -e "s|$TMP|TMP|g" -e "s|:$SINK_PORT\"|:SINKPORT\"|" "$MOAT_CONF" 2>/dev/null || echo "(moat not run)")
\`\`\`

Postfix main.cf (master.cf: the stock services without chroot, smtpd on 127.0.0.1:PORT):

\`\`\`
$(sed -e "s|$TMP|TMP|g" -e "s|:$SINK_PORT$|:SINKPORT|" "$PF_CONF/main.cf" 2>/dev/null || echo "(postfix not run)")
\`\`\`
EOF
}

SECTION=$(section)
echo
echo "$SECTION" | sed -n '/^| body size | sessions/,/^$/p'

# Replace the previous section between the markers, or append one.
BEGIN_MARK="<!-- bench/smtp.sh, $MODE: begin -->"
END_MARK="<!-- bench/smtp.sh, $MODE: end -->"
[[ -f $RESULTS ]] || printf '# Moat benchmark results\n\nFigures written by the scripts in bench/.\n' >"$RESULTS"
{
    # Everything outside the markers, without the blank lines that ended up at the end.
    awk -v b="$BEGIN_MARK" -v e="$END_MARK" '
        $0 == b { skip = 1; next }
        $0 == e { skip = 0; next }
        skip { next }
        /^$/ { blanks++; next }
        { while (blanks > 0) { print ""; blanks-- } print }' "$RESULTS"
    printf '\n%s\n%s\n%s\n' "$BEGIN_MARK" "$SECTION" "$END_MARK"
} >"$RESULTS.new"
mv "$RESULTS.new" "$RESULTS"
log "results written to $RESULTS"
