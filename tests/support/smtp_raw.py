#!/usr/bin/env python3
"""Run a raw SMTP transcript, STARTTLS included, and print what the server answered.

The Rust tests speak plain SMTP over std::net themselves; this helper exists for the one thing
std cannot do, a TLS handshake in the middle of a session. It sends bytes exactly as given, so a
test can pipeline commands after STARTTLS in one write and see what the server does with them.

    smtp_raw.py HOST PORT STEP...

Each step prints one line:

    send:TEXT     sends TEXT in one write; \\r, \\n and \\\\ are unescaped     (prints nothing)
    reply         reads one reply          ->  reply CODE LINE1 | LINE2 | ...
    quiet:MS      waits MS milliseconds    ->  quiet, or unexpected REPR of what arrived
    starttls      TLS handshake, unverified (the certificate is self-signed)  ->  tls VERSION
    eof           waits up to 5 s for the server to close  ->  eof, open, or (over TLS)
                  eof without close_notify

Exits 1 with a message on stderr when the server closes during a reply or the handshake fails.
"""

import re
import select
import socket
import ssl
import sys
import time

# How long any one read may take; the tests' timeouts are all shorter.
READ_TIMEOUT = 10.0


class Connection:
    """A socket, plain or TLS, with the bytes received but not yet used."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=READ_TIMEOUT)
        self.buffer = b""

    def receive(self, timeout):
        """Reads what is there within `timeout` seconds; b"" on close, None on silence."""
        pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
        if not pending:
            readable, _, _ = select.select([self.sock], [], [], timeout)
            if not readable:
                return None
        return self.sock.recv(65536)

    def line(self):
        while b"\n" not in self.buffer:
            data = self.receive(READ_TIMEOUT)
            if not data:
                sys.exit(f"server closed or went silent in a reply; got {self.buffer!r}")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        lines = []
        while True:
            line = self.line()
            lines.append(line[4:])
            if line[3:4] != "-":
                return line[:3], lines

    def quiet(self, milliseconds):
        if self.buffer:
            return self.buffer
        return self.receive(milliseconds / 1000.0)

    def starttls(self):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        # Bytes already received in plain text are kept out of the TLS layer on purpose: the
        # test decides, with a quiet step first, whether any arrived.
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        return self.sock.version()

    def eof(self):
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                data = self.receive(deadline - time.monotonic())
            except ConnectionResetError:
                return "eof"
            except ssl.SSLEOFError:
                return "eof without close_notify"
            if data == b"":
                return "eof"
            if data is None:
                return "open"
            self.buffer += data
        return "open"


ESCAPES = {"r": "\r", "n": "\n", "\\": "\\"}


def unescape(text):
    return re.sub(r"\\(.)", lambda m: ESCAPES[m.group(1)], text).encode("latin-1")


def main():
    host, port, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    connection = Connection(host, port)
    for step in steps:
        name, _, argument = step.partition(":")
        if name == "send":
            connection.sock.sendall(unescape(argument))
        elif name == "reply":
            code, lines = connection.reply()
            print(f"reply {code} {' | '.join(lines)}", flush=True)
        elif name == "quiet":
            data = connection.quiet(int(argument))
            print("quiet" if data is None else f"unexpected {data!r}", flush=True)
        elif name == "starttls":
            try:
                print(f"tls {connection.starttls()}", flush=True)
            except (ssl.SSLError, OSError) as error:
                sys.exit(f"TLS handshake failed: {error}")
        elif name == "eof":
            print(connection.eof(), flush=True)
        else:
            sys.exit(f"unknown step {step!r}")


if __name__ == "__main__":
    main()
