#!/usr/bin/env python3
"""Sends numbered messages over parallel SMTP sessions and records each one the server accepted.

Every message has a distinct Message-ID, <PREFIX.N@send-numbered.example>. When the server
answers 250 to the end of DATA, the line "MESSAGE-ID<TAB>REPLY" is appended to the --acked file
and flushed at once, so the file lists exactly the messages the server took responsibility for,
even if the server dies a moment later. A message whose transaction failed (refused, or the
connection dropped before the reply) goes to the --failed file instead and is not sent again:
the server may or may not have kept it, so it proves nothing either way.

Sessions survive the server going away: a session whose connection breaks reconnects, retrying
a refused connection every 50 ms, until all numbers are used or the deadline passes. That lets a
test kill the server mid-load and restart it while the load goes on. With --port-file, the port
is read from that file before every connection, so a server restarted on another port is found.

Prints one JSON line at the end: {"acked": N, "failed": N, "unsent": N}. Exits 0 when all
numbers were used, 1 when the deadline passed first.
"""

import argparse
import json
import smtplib
import socket
import sys
import threading
import time

DOMAIN = "send-numbered.example"


class Numbers:
    """Hands out message numbers 1..count once each, across threads."""

    def __init__(self, count):
        self.lock = threading.Lock()
        self.next = 1
        self.count = count

    def take(self):
        with self.lock:
            if self.next > self.count:
                return None
            number = self.next
            self.next += 1
            return number

    def remaining(self):
        with self.lock:
            return self.count - self.next + 1


class Ledger:
    """Appends lines to a file under a lock, flushed line by line."""

    def __init__(self, path):
        self.lock = threading.Lock()
        self.file = open(path, "a", encoding="utf-8")
        self.lines = 0

    def write(self, line):
        with self.lock:
            self.file.write(line + "\n")
            self.file.flush()
            self.lines += 1


def message(args, number):
    message_id = f"<{args.prefix}.{number}@{DOMAIN}>"
    filler = ("x" * 76 + "\r\n") * max(1, args.size // 78)
    text = (
        f"From: <{args.sender}>\r\n"
        f"To: <{args.recipient}>\r\n"
        f"Subject: numbered message {number}\r\n"
        f"Message-ID: {message_id}\r\n"
        "\r\n"
        f"This is message {number} of run {args.prefix}.\r\n"
        f"{filler}"
    )
    return message_id, text.encode("ascii")


def current_port(args):
    if args.port_file is None:
        return args.port
    with open(args.port_file, encoding="ascii") as file:
        return int(file.read().strip())


def connect(args, deadline):
    """Connects and says EHLO, retrying until the deadline; None when it passed."""
    while time.monotonic() < deadline:
        try:
            client = smtplib.SMTP(args.host, current_port(args), timeout=args.timeout)
            client.ehlo("client.example.org")
            return client
        except (OSError, ValueError, smtplib.SMTPException):
            time.sleep(0.05)
    return None


def session(args, numbers, acked, failed, deadline):
    client = None
    while time.monotonic() < deadline:
        if client is None:
            client = connect(args, deadline)
            if client is None:
                return

        number = numbers.take()
        if number is None:
            break
        message_id, text = message(args, number)
        try:
            code, reply = client.mail(args.sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, args.sender)
            code, reply = client.rcpt(args.recipient)
            if code != 250:
                raise smtplib.SMTPRecipientsRefused({args.recipient: (code, reply)})
            code, reply = client.data(text)
            acked.write(f"{message_id}\t{code} {reply.decode('ascii', 'replace')}")
        except (OSError, smtplib.SMTPException) as error:
            failed.write(f"{message_id}\t{type(error).__name__}: {error}")
            # The session's state is unknown after an error: start a fresh one.
            try:
                client.close()
            except OSError:
                pass
            client = None

    if client is not None:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    ports = parser.add_mutually_exclusive_group(required=True)
    ports.add_argument("--port", type=int)
    ports.add_argument("--port-file", help="file holding the port, read before each connection")
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--size", type=int, default=1024, help="approximate body size in octets")
    parser.add_argument("--prefix", required=True, help="first part of every Message-ID")
    parser.add_argument("--sender", default="sender@example.org")
    parser.add_argument("--recipient", required=True)
    parser.add_argument("--acked", required=True, help="file of Message-IDs that got 250")
    parser.add_argument("--failed", required=True, help="file of Message-IDs that did not")
    parser.add_argument("--deadline", type=float, default=600, help="seconds before giving up")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per SMTP reply")
    args = parser.parse_args()

    socket.setdefaulttimeout(args.timeout)
    deadline = time.monotonic() + args.deadline
    numbers = Numbers(args.messages)
    acked = Ledger(args.acked)
    failed = Ledger(args.failed)

    threads = [
        threading.Thread(target=session, args=(args, numbers, acked, failed, deadline))
        for _ in range(args.sessions)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    unsent = numbers.remaining()
    print(json.dumps({"acked": acked.lines, "failed": failed.lines, "unsent": unsent}))
    return 0 if unsent == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
