#!/usr/bin/env python3
"""Retrieve every message of some users' maildrops over POP3 (poplib) and write each as bytes.

For each user (--user, repeatable) this logs in with USER/PASS, optionally waits until the
maildrop holds at least --wait-for messages (at most --timeout seconds in all), RETRieves every
message without deleting it and writes it to OUT/<user>/<n>.eml. poplib removes the
dot-stuffing and splits the lines; they are joined again with CRLF, the form in which they
travelled. It prints one line per user:

    <user><TAB><number of messages retrieved>

The exit status is non-zero only when POP3 itself fails.
"""

import argparse
import os
import poplib
import sys
import time

# poplib refuses lines longer than 2048 octets; some corpus messages have longer lines and are
# still valid mail as far as this test is concerned.
poplib._MAXLINE = 1 << 20


def fetch_user(args, user, deadline):
    while True:
        client = poplib.POP3(args.host, args.port, timeout=60)
        client.user(user)
        client.pass_(args.password)
        count, _size = client.stat()
        if count >= args.wait_for or time.monotonic() > deadline:
            break
        # A POP3 session sees the maildrop as it was at login: log in again to see new mail.
        client.quit()
        time.sleep(0.2)

    out = os.path.join(args.out, user)
    os.makedirs(out, exist_ok=True)
    for number in range(1, count + 1):
        _response, lines, _octets = client.retr(number)
        with open(os.path.join(out, f"{number:06d}.eml"), "wb") as f:
            f.write(b"".join(line + b"\r\n" for line in lines))
    client.quit()
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--user", action="append", default=[])
    parser.add_argument("--wait-for", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    deadline = time.monotonic() + args.timeout
    for user in args.user:
        print(f"{user}\t{fetch_user(args, user, deadline)}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
