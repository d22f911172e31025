#!/usr/bin/env bash
# Detection quality: Moat's content verdict (rules plus classifier, no network checks) against
# SpamAssassin and Rspamd on one split of the SpamAssassin public corpus, in one run: each
# learns the training half, classifies the test half, and bench/detection/evaluate.py reports
# spam caught (recall), ham wrongly flagged (all ham, hard ham alone), the ROC area, spam caught
# at a false positive rate of at most 0.2%, and classification time per message.
#
# Every peer runs privately: SpamAssassin's spamd and Rspamd with their own configuration, data
# and logs in a temporary directory, a private redis-server for Rspamd's Bayes, all on
# 127.0.0.1 ports the kernel picked; no DNS (Rspamd's resolver points at a closed loopback port),
# no Razor, Pyzor, DCC, fuzzy storage or remote maps; autolearn off everywhere. The system's
# /etc/spamassassin and /etc/rspamd are read, never written, and the Debian services are not
# started. Everything started is stopped at exit. Not a timed test.
#
# Usage (the corpus, see scripts/fetch-corpus; installs spamassassin, spamd, rspamd and
# redis-server with apt-get when they are missing):
#   bench/detection.sh
# Knobs, from the environment (defaults in brackets):
#   DETECTION_PRODUCTS     ["moat spamassassin rspamd"]  which products to run; bench/RESULTS.md
#                          is written only when all three ran (or BENCH_RESULTS is set)
#   DETECTION_CONCURRENCY  [2]  requests in flight to spamd and Rspamd (and their worker count)
#   DETECTION_KEEP         [0]  1 keeps the temporary directory (configurations, logs, verdicts)
#   BENCH_RESULTS          [bench/RESULTS.md]  where the section is written
set -euo pipefail
cd "$(dirname "$0")/.."

products=${DETECTION_PRODUCTS:-moat spamassassin rspamd}
concurrency=${DETECTION_CONCURRENCY:-2}
results=${BENCH_RESULTS:-bench/RESULTS.md}
write_results=0
if [ "$products" = "moat spamassassin rspamd" ] || [ -n "${BENCH_RESULTS:-}" ]; then
    write_results=1
fi
begin='<!-- bench/detection.sh: begin -->'
end='<!-- bench/detection.sh: end -->'
runs() { [[ " $products " == *" $1 "* ]]; }

# --- Peers, installed with apt-get when missing -------------------------------------------
install_missing() {
    local missing=()
    if runs spamassassin; then
        command -v sa-learn >/dev/null || missing+=(spamassassin)
        [ -x /usr/sbin/spamd ] || missing+=(spamd)
    fi
    if runs rspamd; then
        command -v rspamd >/dev/null || missing+=(rspamd)
        command -v redis-server >/dev/null || missing+=(redis-server)
    fi
    [ ${#missing[@]} -eq 0 ] && return 0

    local as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    echo "== installing ${missing[*]}"

    # policy-rc.d exit 101 keeps the packages' own services (spamd, rspamd, redis) from
    # starting: this bench runs private instances only.
    local policy=/usr/sbin/policy-rc.d
    local own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
        "${as_root[@]}" chmod 755 "$policy"
        own_policy=1
    fi
    local status=0
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends \
        "${missing[@]}" ||
        {
            "${as_root[@]}" apt-get update -q &&
                DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q \
                    --no-install-recommends "${missing[@]}"
        } || status=$?
    [ "$own_policy" -eq 0 ] || "${as_root[@]}" rm -f "$policy"
    if [ "$status" -ne 0 ]; then
        echo "bench: apt-get could not install ${missing[*]} (exit $status)" >&2
        exit 1
    fi
}
install_missing

[ -f .corpus/spamassassin/.complete ] || scripts/fetch-corpus

work=$(mktemp -d "${TMPDIR:-/tmp}/moat-bench-detection.XXXXXX")
# spamd's children and Rspamd's workers run as their own users and must reach their dirs.
chmod 755 "$work"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${DETECTION_KEEP:-0}" = 1 ]; then
        echo "== kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

free_port() { # tcp|udp -> a port nothing listens on now
    python3 -c "import socket, sys
s = socket.socket(type=socket.SOCK_DGRAM if sys.argv[1] == 'udp' else socket.SOCK_STREAM)
s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])" "$1"
}
wait_port() { # port seconds what
    local deadline=$((SECONDS + $2))
    while [ "$SECONDS" -lt "$deadline" ]; do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.2
    done
    echo "bench: $3 does not listen on 127.0.0.1:$1 after $2 s (its log is below)" >&2
    return 1
}
stop() { # pid: stop one process this script started, and wait for it
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
# Lines of a split list with one label, as bare paths.
paths_of() { awk -F'\t' -v label="$1" '$1 == label { print $3 }' "$2"; }

# --- The split ------------------------------------------------------------------------------
echo "== splitting the corpus"
python3 bench/detection/split.py --check "$PWD/.corpus/spamassassin" >/dev/null
python3 bench/detection/split.py "$PWD/.corpus/spamassassin" "$work/split"
train=$work/split/train.txt
test=$work/split/test.txt
paths_of spam "$train" >"$work/train-spam.txt"
paths_of ham "$train" >"$work/train-ham.txt"
cut -f3 "$test" >"$work/test-paths.txt"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
evaluated=()
trained=()

# --- Moat -----------------------------------------------------------------------------------
moat=target/release/moat
if runs moat; then
    echo "== building Moat (release)"
    cargo build --release -p moat --quiet
    if ! "$moat" learn --help >/dev/null 2>&1 || ! "$moat" check --help >/dev/null 2>&1; then
        echo "bench: $moat has no 'learn' or 'check' command yet (issue 6 adds them); run" \
            "with DETECTION_PRODUCTS=\"spamassassin rspamd\" to measure the peers alone" >&2
        exit 1
    fi

    data=$work/moat-data
    mkdir -p "$data"
    echo "== Moat: learning the training half"
    started=$(date +%s.%N)
    moat_learned_spam=$("$moat" learn spam --data-dir "$data" - <"$work/train-spam.txt")
    moat_learned_ham=$("$moat" learn ham --data-dir "$data" - <"$work/train-ham.txt")
    echo "$moat_learned_spam"
    echo "$moat_learned_ham"
    trained+=("Moat: $(awk "BEGIN { printf \"%.0f\", $(date +%s.%N) - $started }") s (\`moat learn\`); $moat_learned_spam; $moat_learned_ham")

    echo "== Moat: classifying the test half"
    started=$(date +%s.%N)
    "$moat" check --data-dir "$data" --no-network - <"$work/test-paths.txt" >"$work/moat-check.txt"
    wall=$(awk "BEGIN { printf \"%.3f\", $(date +%s.%N) - $started }")

    # path score probability action contributions -> path score flagged seconds. Moat's own
    # verdict is spam when the action is tag, quarantine or reject.
    awk -F'\t' -v wall="$wall" '
        NF >= 4 {
            flagged = ($4 == "tag" || $4 == "quarantine" || $4 == "reject") ? 1 : 0
            print $1 "\t" $2 "\t" flagged "\t-"
            n++
        }
        END { print "# wall " wall " concurrency one moat check process, messages one at a time errors 0" }
    ' "$work/moat-check.txt" >"$work/moat.txt"
    echo "moat check: $(grep -vc '^#' "$work/moat.txt") verdicts in $wall s"
    evaluated+=("Moat=$work/moat.txt")
fi

# --- SpamAssassin ---------------------------------------------------------------------------
# Debian's site configuration (the .pre files that load the plugins, 65_debian.cf) copied as
# shipped, with our local.cf; the rules are the ones in the package (/usr/share/spamassassin),
# so that a machine where sa-update once ran measures the same rules.
sa_rules=/usr/share/spamassassin
sa_user=debian-spamd
getent passwd "$sa_user" >/dev/null || sa_user=nobody
if runs spamassassin; then
    sa=$work/spamassassin
    mkdir -p "$sa/site" "$sa/bayes" "$sa/home"
    cp /etc/spamassassin/*.pre /etc/spamassassin/65_debian.cf "$sa/site/" 2>/dev/null ||
        cp /etc/spamassassin/*.pre "$sa/site/"
    cat >"$sa/site/local.cf" <<EOF
# Local tests only: no DNS blocklists, no DNS at all, no Razor or Pyzor (DCC is not loaded).
dns_available no
skip_rbl_checks 1
use_razor2 0
use_pyzor 0
# Bayes learns only from sa-learn on the training half, and keeps all of it.
use_bayes 1
bayes_auto_learn 0
bayes_auto_expire 0
bayes_path $sa/bayes/bayes
bayes_file_mode 0770
EOF
    : >"$sa/user_prefs"
    sa_args=(-L --siteconfigpath="$sa/site" --configpath="$sa_rules")

    echo "== SpamAssassin: learning the training half (sa-learn)"
    started=$(date +%s.%N)
    HOME=$sa/home sa-learn "${sa_args[@]}" -p "$sa/user_prefs" --spam -f "$work/train-spam.txt"
    HOME=$sa/home sa-learn "${sa_args[@]}" -p "$sa/user_prefs" --ham -f "$work/train-ham.txt"
    sa_counts=$(HOME=$sa/home sa-learn "${sa_args[@]}" -p "$sa/user_prefs" --dump magic |
        awk '/non-token data: nspam/ { s = $3 } /non-token data: nham/ { h = $3 }
             END { print s " spam / " h " ham learned" }')
    trained+=("SpamAssassin: $(awk "BEGIN { printf \"%.0f\", $(date +%s.%N) - $started }") s (\`sa-learn\`, one process); $sa_counts")
    chown -R "$sa_user" "$sa/bayes" "$sa/home"

    sa_port=$(free_port tcp)
    HOME=$sa/home /usr/sbin/spamd "${sa_args[@]}" -x -u "$sa_user" \
        -i 127.0.0.1 -p "$sa_port" -A 127.0.0.1 \
        -m "$concurrency" --min-children="$concurrency" --min-spare=1 --max-spare="$concurrency" \
        -r "$sa/spamd.pid" -s "$sa/spamd.log" --helper-home-dir="$sa/home" \
        >"$sa/spamd.out" 2>&1 &
    spamd_pid=$!
    pids+=("$spamd_pid")
    wait_port "$sa_port" 120 spamd || { tail -20 "$sa/spamd.out" >&2; exit 1; }

    echo "== SpamAssassin: classifying the test half (spamd, $concurrency children)"
    python3 bench/detection/classify.py spamd "127.0.0.1:$sa_port" "$test" "$work/spamassassin.txt" \
        "$concurrency"
    stop "$spamd_pid"
    evaluated+=("SpamAssassin=$work/spamassassin.txt")
fi

# --- Rspamd ---------------------------------------------------------------------------------
# Modules that ask the network (DNS lists, fuzzy storage, SPF/DKIM/DMARC/ARC, the PTR lookups
# of once_received, URL redirects, remote maps, updates) or need Redis for something other than
# Bayes.
rs_disabled="rbl surbl emails fuzzy_check dcc dkim spf dmarc arc asn whitelist multimap once_received
    rspamd_update url_redirector greylist ratelimit replies history_redis neural reputation
    mx_check external_services antivirus clickhouse elastic metadata_exporter metric_exporter
    p0f spamtrap dkim_signing bimi"
# Debian's /etc/rspamd as CONFDIR, our own top-level file (two workers on our ports, no proxy
# or fuzzy worker) and our own LOCAL_CONFDIR with the overrides below.
if runs rspamd; then
    rs=$work/rspamd
    mkdir -p "$rs/local/local.d" "$rs/local/override.d" "$rs/db" "$rs/run" "$rs/log" "$rs/redis"
    rs_normal=$(free_port tcp)
    rs_controller=$(free_port tcp)
    redis_port=$(free_port tcp)
    dead_dns=$(free_port udp)

    cat >"$rs/rspamd.conf" <<EOF
.include "\$CONFDIR/common.conf"
options {
    pidfile = "\$RUNDIR/rspamd.pid";
    .include "\$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "\$LOCAL_CONFDIR/local.d/options.inc"
}
logging {
    type = "file";
    filename = "\$LOGDIR/rspamd.log";
    level = "info";
}
worker "normal" {
    bind_socket = "127.0.0.1:$rs_normal";
    .include "\$CONFDIR/worker-normal.inc"
    count = $concurrency;
}
worker "controller" {
    bind_socket = "127.0.0.1:$rs_controller";
    .include "\$CONFDIR/worker-controller.inc"
}
EOF
    # No DNS: the resolver asks a loopback port nothing listens on, so every lookup fails at
    # once and nothing leaves the machine (maps on remote hosts cannot even be resolved).
    cat >"$rs/local/local.d/options.inc" <<EOF
dns {
    nameserver = ["127.0.0.1:$dead_dns"];
    timeout = 0.1s;
    retransmits = 1;
}
EOF
    for module in $rs_disabled; do
        echo 'enabled = false;' >"$rs/local/local.d/$module.conf"
    done
    # hfilter: its HELO, hostname, envelope sender and recipient checks resolve names; its URL
    # checks are content and stay.
    printf '%s\n' 'helo_enabled = false;' 'hostname_enabled = false;' 'from_enabled = false;' \
        'rcpt_enabled = false;' 'url_enabled = true;' >"$rs/local/local.d/hfilter.conf"
    # The shipped map files only, not their https://maps.rspamd.com copies.
    cat >"$rs/local/override.d/phishing.conf" <<'EOF'
phishtank_enabled = false;
openphish_enabled = false;
exceptions = {
  REDIRECTOR_FALSE = ["file://${CONFDIR}/maps.d/redirectors.inc"];
};
EOF
    # shellcheck disable=SC2016 # ${CONFDIR} is Rspamd's variable, expanded by Rspamd.
    echo 'file = ["file://${CONFDIR}/maps.d/mime_types.inc"];' \
        >"$rs/local/override.d/mime_types.conf"
    # shellcheck disable=SC2016 # the same.
    echo 'source = { url = ["file://${CONFDIR}/maps.d/mid.inc"]; }' \
        >"$rs/local/override.d/mid.conf"
    # DATE_IN_PAST compares the Date field with today: the corpus is from 2002, so nearly
    # every message would get its point. The mail is judged as if it had just arrived.
    printf '%s\n' 'symbols {' '  "DATE_IN_PAST" { weight = 0.0; }' '}' \
        >"$rs/local/local.d/headers_group.conf"
    # Bayes in the private Redis, learned only from rspamc on the training half.
    cat >"$rs/local/local.d/classifier-bayes.conf" <<EOF
backend = "redis";
servers = "127.0.0.1:$redis_port";
autolearn = false;
EOF
    chown -R _rspamd:_rspamd "$rs/db" "$rs/run" "$rs/log" 2>/dev/null || true

    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$rs/redis" --save '' \
        --appendonly no --protected-mode yes --daemonize no >"$rs/redis.log" 2>&1 &
    pids+=($!)
    redis_pid=$!
    wait_port "$redis_port" 30 redis-server || { tail -20 "$rs/redis.log" >&2; exit 1; }

    rs_user=_rspamd
    getent passwd "$rs_user" >/dev/null || rs_user=nobody
    rspamd -f -c "$rs/rspamd.conf" -u "$rs_user" -g "$(id -gn "$rs_user")" \
        --var=LOCAL_CONFDIR="$rs/local" --var=DBDIR="$rs/db" --var=RUNDIR="$rs/run" \
        --var=LOGDIR="$rs/log" >"$rs/rspamd.out" 2>&1 &
    rspamd_pid=$!
    pids+=("$rspamd_pid")
    wait_port "$rs_normal" 180 rspamd || { tail -20 "$rs/rspamd.out" "$rs/log/rspamd.log" >&2; exit 1; }
    wait_port "$rs_controller" 60 "rspamd's controller" || exit 1

    # Until its hyperscan databases are compiled and loaded, Rspamd falls back to slower
    # regular expressions: wait for them (up to 5 minutes), so its time per message is fair.
    deadline=$((SECONDS + 300))
    until grep -q 'hyperscan database of .* has been loaded' "$rs/log/rspamd.log" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "bench: rspamd has not loaded hyperscan databases after 300 s; going on" >&2
            break
        fi
        sleep 1
    done

    echo "== Rspamd: learning the training half (rspamc learn_spam / learn_ham)"
    started=$(date +%s.%N)
    # `Learn-Type: bulk` is Rspamd's way to learn a whole corpus: without it, its learn
    # condition skips every message the classifier already puts in that class with 95%
    # confidence (two thirds of the ham here). rspamc exits non-zero when any message of its
    # batch was not learned (a Message-ID learned before, too few tokens): the counts below
    # say how many were, so that is not fatal here.
    learn_with_rspamc() { # learn_spam|learn_ham list output
        xargs -a "$2" rspamc -h "127.0.0.1:$rs_controller" -n "$concurrency" \
            --header 'Learn-Type: bulk' "$1" >"$3" 2>&1 || true
        grep -c 'success = true' "$3" || true
    }
    rs_spam=$(learn_with_rspamc learn_spam "$work/train-spam.txt" "$rs/learn-spam.out")
    rs_ham=$(learn_with_rspamc learn_ham "$work/train-ham.txt" "$rs/learn-ham.out")
    rs_counts="$rs_spam spam / $rs_ham ham learned"
    trained+=("Rspamd: $(awk "BEGIN { printf \"%.0f\", $(date +%s.%N) - $started }") s (\`rspamc learn\`, $concurrency in flight); $rs_counts")
    echo "rspamd: $rs_counts"

    echo "== Rspamd: classifying the test half (/checkv2, $concurrency workers)"
    python3 bench/detection/classify.py rspamd "127.0.0.1:$rs_normal" "$test" "$work/rspamd.txt" \
        "$concurrency"
    stop "$rspamd_pid"
    stop "$redis_pid"
    # Rspamd logs the DNS requests of every task: the proof that none went out.
    rs_dns_requests=$(grep -ao 'dns req: [0-9]*' "$rs/log/rspamd.log" | awk '{ n += $3 } END { print n + 0 }')
    evaluated+=("Rspamd=$work/rspamd.txt")
fi

# --- The table ------------------------------------------------------------------------------
python3 bench/detection/evaluate.py "$test" "${evaluated[@]}" >"$work/table.md"

rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain 2>/dev/null | wc -l)
version_of() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not installed"; }
{
    echo "$begin"
    echo "## Detection quality: Moat, SpamAssassin and Rspamd on one corpus split (bench/detection.sh)"
    echo
    echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') at Moat $rev ($dirty files changed or untracked),"
    echo "release build, $(nproc) cores ($(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')),"
    echo "load average before the run $load_before. Products run one after another; the machine"
    echo "is shared, so times compare within one run only."
    echo
    echo "Corpus: the SpamAssassin public corpus, split by bench/detection/split.py (within each"
    echo "group, files sorted by MD5 of their bytes, even positions train, odd ones test):"
    echo "training half $(grep -c . "$train") messages ($(grep -c . "$work/train-spam.txt") spam,"
    echo "$(grep -c . "$work/train-ham.txt") ham), test half $(grep -c . "$test") messages."
    echo
    cat "$work/table.md"
    echo
    echo "Training on the training half:"
    echo
    for line in "${trained[@]}"; do echo "- $line"; done
    echo
    echo "Versions: SpamAssassin $(version_of spamassassin) (rules as shipped in $sa_rules,"
    echo "no sa-update), Rspamd $(version_of rspamd), redis-server $(version_of redis-server)."
    echo
    echo "Settings:"
    echo
    echo "- Moat: \`moat learn spam|ham --data-dir TMP -\` on the training half, then"
    echo "  \`moat check --data-dir TMP --no-network -\` on the test half, default configuration;"
    echo "  spam at its default means an action of tag, quarantine or reject; the score column is"
    echo "  the verdict's score."
    echo "- SpamAssassin: \`sa-learn -L --spam|--ham -f LIST\`, then spamd \`-L -x -m $concurrency\`"
    echo "  on 127.0.0.1, queried with SPAMC/1.5 CHECK ($concurrency in flight); Debian's .pre"
    echo "  files and 65_debian.cf with this local.cf: \`dns_available no\`, \`skip_rbl_checks 1\`,"
    echo "  \`use_razor2 0\`, \`use_pyzor 0\`, \`use_bayes 1\`, \`bayes_auto_learn 0\`,"
    echo "  \`bayes_auto_expire 0\`. Spam at its default: score >= 5.0 (required_score); scores"
    echo "  come with one decimal."
    echo "- Rspamd: stock /etc/rspamd with a normal worker ($concurrency processes) and a"
    echo "  controller on 127.0.0.1, Bayes (osb, new schema) in a private redis-server, autolearn"
    echo "  off, min_learns 200 (stock); \`rspamc --header 'Learn-Type: bulk' learn_spam|learn_ham\`"
    echo "  (bulk: every message learned, not only those Bayes is unsure of), then POST /checkv2 with"
    echo "  the message alone (no IP, HELO or envelope: Rspamd takes the client address from"
    echo "  the Received fields), $concurrency in flight. The resolver points at a closed loopback"
    echo "  port (DNS requests logged over the test half: ${rs_dns_requests:-not run}); modules off:"
    printf '%s' "$rs_disabled" | tr -s ' \n' ' ' | sed 's/ /, /g; s/$/;/' | fmt -w 94 | sed 's/^/  /'
    echo "  hfilter's HELO/hostname/sender/recipient checks off; phishing, mime_types and mid use"
    echo "  their shipped map files only; DATE_IN_PAST weighs 0 (the corpus is from 2002, the"
    echo "  rule compares with today). Spam at its default: action add header or reject"
    echo "  (score >= 6); greylist (score >= 4) is a deferral, not a verdict."
    echo "$end"
} >"$work/section.md"

echo
sed '1d;$d' "$work/section.md"

if [ "$write_results" -eq 1 ]; then
    # Replace the old section, or append one.
    python3 bench/write_section.py "$results" "$work/section.md" "$begin" "$end"
    echo "== written to $results"
else
    echo "== not written to $results: only $products ran"
fi
