#!/usr/bin/env python3
"""Fetch every message of some users' INBOX over IMAP (imaplib) and write each out as bytes.

For each user (--user, repeatable, or --users FILE with one user a line) this logs in with
--password, optionally waits until the INBOX holds at least --wait-for messages (at most
--timeout seconds in all), fetches BODY.PEEK[] of every message (the message as stored, nothing
decoded or re-encoded) and writes it to OUT/<user>/<uid>.eml. It prints one line per user:

    <user><TAB><number of messages fetched>

A user whose INBOX stays short of --wait-for is reported with the number found; the caller
decides. The exit status is non-zero only when IMAP itself fails.
"""

import argparse
import imaplib
import os
import re
import sys
import time

UID = re.compile(rb"UID (\d+)")


def fetch_user(args, user, deadline):
    client = imaplib.IMAP4(args.host, args.port, timeout=60)
    try:
        client.login(user, args.password)
        while True:
            typ, data = client.select("INBOX", readonly=True)
            if typ != "OK":
                raise RuntimeError(f"SELECT INBOX for {user}: {typ} {data!r}")
            count = int(data[0])
            if count >= args.wait_for or time.monotonic() > deadline:
                break
            client.close()
            time.sleep(0.2)

        out = os.path.join(args.out, user)
        os.makedirs(out, exist_ok=True)
        if count == 0:
            return 0
        typ, data = client.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
        if typ != "OK":
            raise RuntimeError(f"FETCH for {user}: {typ} {data!r}")
        written = 0
        for item in data:
            if not isinstance(item, tuple):
                continue
            uid = UID.search(item[0])
            if uid is None:
                raise RuntimeError(f"FETCH response without UID: {item[0]!r}")
            with open(os.path.join(out, f"{int(uid.group(1)):06d}.eml"), "wb") as f:
                f.write(item[1])
            written += 1
        return written
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--user", action="append", default=[])
    parser.add_argument("--users", help="a file with one user a line")
    parser.add_argument("--wait-for", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    users = list(args.user)
    if args.users:
        with open(args.users, encoding="utf-8") as f:
            users += [line.strip() for line in f if line.strip()]
    deadline = time.monotonic() + args.timeout
    for user in users:
        print(f"{user}\t{fetch_user(args, user, deadline)}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
