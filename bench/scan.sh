#!/usr/bin/env bash
# Content scanning, in process: the built-in anti-virus scanner (layer 2) against clamd on the
# same signature files and the same messages (MB/s and their ratio), and the whole content
# pipeline's messages per second and per-message latency, without and with clamd.
#
# The measuring is done by tests/content_bench.rs (an ignored test, built in release mode),
# which starts its own clamd in the foreground on a Unix socket and a loopback port, with a
# signature set it writes (no official database, no freshclam), and writes a Markdown section.
# This script builds and runs it and puts the section into bench/RESULTS.md between its
# markers. Not a timed test.
#
# Usage (Debian's clamav-daemon, see scripts/setup; the corpora, see scripts/fetch-corpus):
#   bench/scan.sh
# Knobs, from the environment (defaults in brackets):
#   BENCH_RUNS     [3]     runs of each measurement; medians are reported
#   BENCH_NDB      [2000]  generated body signatures (.ndb), beside the tests' own
#   BENCH_HDB      [5000]  generated hash signatures (.hdb)
#   BENCH_RESULTS  [bench/RESULTS.md] where the section is written
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${BENCH_RUNS:-3}
ndb=${BENCH_NDB:-2000}
hdb=${BENCH_HDB:-5000}
results=${BENCH_RESULTS:-bench/RESULTS.md}
begin='<!-- bench/scan.sh: begin -->'
end='<!-- bench/scan.sh: end -->'

if ! [ -x /usr/sbin/clamd ] && ! command -v clamd >/dev/null; then
    echo "bench: clamd is missing (scripts/setup installs clamav-daemon)" >&2
    exit 1
fi
[ -d .corpus/spamassassin ] || scripts/fetch-corpus

work=$(mktemp -d "${TMPDIR:-/tmp}/moat-bench-scan.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== building (release)"
cargo test --release --test content_bench --no-run --quiet

echo "== measuring ($runs runs, $ndb + $hdb generated signatures)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
MOAT_BENCH_OUT="$work/section.md" MOAT_BENCH_RUNS="$runs" MOAT_BENCH_NDB="$ndb" \
    MOAT_BENCH_HDB="$hdb" \
    cargo test --release --quiet --test content_bench -- --ignored --nocapture --test-threads 1

rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain 2>/dev/null | wc -l)
clamd_version=$( (/usr/sbin/clamd --version 2>/dev/null || clamd --version) | head -1)
{
    echo "$begin"
    echo "## Content scanning: layer 2 against clamd, and the pipeline (bench/scan.sh)"
    echo
    echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') at Moat $rev ($dirty files changed or untracked),"
    echo "release build, $(nproc) cores ($(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')),"
    echo "load average before the run $load_before; $clamd_version. The machine is shared:"
    echo "compare figures within one run."
    echo
    cat "$work/section.md"
    echo
    echo "$end"
} >"$work/new-section.md"

# Replace the old section, or append one.
python3 bench/write_section.py "$results" "$work/new-section.md" "$begin" "$end"
echo "== written to $results"
