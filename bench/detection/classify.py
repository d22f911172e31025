#!/usr/bin/env python3
"""Sends every message of a list to a running spam filter over its own protocol on loopback and
writes one line per message: `<path>\t<score>\t<flagged 0|1>\t<seconds>`.

The filters are the peers of bench/detection.sh:
    classify.py spamd  HOST:PORT LIST OUT [CONCURRENCY]   SpamAssassin's spamd, SPAMC/1.5 CHECK
    classify.py rspamd HOST:PORT LIST OUT [CONCURRENCY]   Rspamd's normal worker, HTTP /checkv2

LIST is a split file (`<label>\t<group>\t<path>` per line, as split.py writes). `flagged` is the
product's own verdict at its default threshold: for spamd the `Spam: True` of its answer
(score >= required_score), for Rspamd an action of `add header`, `rewrite subject` or `reject`
(score >= the add_header threshold; `greylist` and `soft reject` are deferrals, not verdicts).
`seconds` is the wall time of that one request, connect to last byte. CONCURRENCY requests are
kept in flight (default 2, one per core of the benchmark machine); the last line of OUT is a
comment `# wall <seconds> concurrency <n> in flight errors <n>` for the whole list.

A message the filter fails on is written with score `nan` and counted in `errors`; the evaluator
reports it rather than guessing a verdict. Python 3 standard library only.
"""

import concurrent.futures
import http.client
import json
import socket
import sys
import time

# Generous, because spamd on a loaded 2-core machine takes seconds on its largest messages; a
# request past it is an error, not a verdict.
REQUEST_TIMEOUT_SECONDS = 120

# The Rspamd actions that mean "this is spam" at Rspamd's default thresholds.
RSPAMD_SPAM_ACTIONS = {"add header", "rewrite subject", "reject"}


def spamd_check(address, message):
    """One SPAMC/1.5 CHECK; returns (score, flagged)."""
    host, port = address
    request = (f"CHECK SPAMC/1.5\r\nContent-length: {len(message)}\r\n\r\n").encode() + message
    with socket.create_connection((host, port), timeout=REQUEST_TIMEOUT_SECONDS) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk

    # SPAMD/1.1 0 EX_OK, then a `Spam: True ; 15.3 / 5.0` header.
    lines = answer.decode("latin-1").split("\r\n")
    if not lines[0].startswith("SPAMD/") or " 0 " not in lines[0]:
        raise RuntimeError(f"spamd answered {lines[0]!r}")
    for line in lines[1:]:
        if line.lower().startswith("spam:"):
            verdict, _, figures = line.split(":", 1)[1].partition(";")
            score = float(figures.split("/")[0])
            return score, verdict.strip().lower() in ("true", "yes")
    raise RuntimeError("spamd answered without a Spam: header")


def rspamd_check(address, message):
    """One POST /checkv2; returns (score, flagged)."""
    host, port = address
    connection = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT_SECONDS)
    try:
        # No IP, HELO or envelope: Moat's and SpamAssassin's checks get the message alone too.
        connection.request("POST", "/checkv2", body=message)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"rspamd answered HTTP {response.status}: {body[:200]!r}")
    result = json.loads(body)
    if "score" not in result:
        raise RuntimeError(f"rspamd answered without a score: {body[:200]!r}")
    return float(result["score"]), result.get("action") in RSPAMD_SPAM_ACTIONS


CHECKS = {"spamd": spamd_check, "rspamd": rspamd_check}


def classify_one(check, address, path):
    with open(path, "rb") as message_file:
        message = message_file.read()
    started = time.monotonic()
    try:
        score, flagged = check(address, message)
    except (OSError, RuntimeError, ValueError) as error:
        print(f"classify.py: {path}: {error}", file=sys.stderr)
        return path, float("nan"), False, time.monotonic() - started
    return path, score, flagged, time.monotonic() - started


def main(argv):
    if len(argv) not in (5, 6) or argv[1] not in CHECKS:
        print(__doc__, file=sys.stderr)
        return 64
    check = CHECKS[argv[1]]
    host, _, port = argv[2].rpartition(":")
    address = (host, int(port))
    list_path, out_path = argv[3], argv[4]
    concurrency = int(argv[5]) if len(argv) == 6 else 2

    with open(list_path) as split_list:
        paths = [line.rstrip("\n").split("\t")[2] for line in split_list if line.strip()]

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda path: classify_one(check, address, path), paths))
    wall = time.monotonic() - started

    errors = 0
    with open(out_path, "w") as out:
        for path, score, flagged, seconds in results:
            errors += score != score
            out.write(f"{path}\t{score}\t{int(flagged)}\t{seconds:.6f}\n")
        out.write(f"# wall {wall:.3f} concurrency {concurrency} in flight errors {errors}\n")
    print(f"classify.py {argv[1]}: {len(paths)} messages in {wall:.1f} s "
          f"({concurrency} in flight), {errors} errors")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
