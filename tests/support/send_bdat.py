#!/usr/bin/env python3
"""Send message files with BDAT (RFC 3030 CHUNKING) over a raw socket; smtplib has no BDAT.

The manifest is the one send_smtplib.py reads: a path, a tab, recipients separated by commas.
Each file is read as bytes; line endings are made CRLF and a final CRLF is added if missing (the
server refuses bare LF and bare CR), and nothing else changes: BDAT data is not dot-stuffed.

The n-th message (from 0) is cut into chunks in one of three ways, by n modulo 3:

    0   a chunk ending between the CR and the LF of the first line ending, 4096-byte chunks,
        and the final LF alone in `BDAT 1 LAST`
    1   the same cuts, all as plain BDAT chunks, then an empty `BDAT 0 LAST`
    2   the whole message in one `BDAT n LAST`

With --pipeline, MAIL, RCPT and every BDAT of a message go out in one write and the replies are
read afterwards (RFC 3030 section 4.2 allows it); otherwise each command waits for its reply.
For every message one line is printed, as send_smtplib.py does:

    queued<TAB>PATH<TAB>QUEUE-ID
    refused<TAB>PATH<TAB>STAGE CODE TEXT

The exit status is 0 when every message was queued, 1 otherwise.
"""

import argparse
import re
import socket
import ssl
import sys

EOL = re.compile(rb"\r\n|\r|\n")
QUEUED = re.compile(rb"queued as (\S+)")


class Session:
    def __init__(self, host, port, starttls):
        self.sock = socket.create_connection((host, port), timeout=60)
        self.file = self.sock.makefile("rb")
        self.expect("greeting", self.reply(), 220)
        extensions = self.command(b"EHLO client.example.com")
        self.expect("EHLO", extensions, 250)
        if starttls:
            self.expect("STARTTLS", self.command(b"STARTTLS"), 220)
            # Moat's certificate is self-signed: the tests check encryption, not identity.
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
            self.file = self.sock.makefile("rb")
            extensions = self.command(b"EHLO client.example.com")
            self.expect("EHLO", extensions, 250)
        names = [line[4:].split()[0].upper() for line in extensions[1] if len(line) > 4]
        if b"CHUNKING" not in names:
            raise SessionError(f"EHLO does not offer CHUNKING: {extensions[1]!r}")

    def reply(self):
        """One reply: (code, [lines])."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise SessionError(f"connection closed; reply so far {lines!r}")
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def command(self, line):
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    @staticmethod
    def expect(stage, reply, code):
        if reply[0] != code:
            raise SessionError(f"{stage} {reply[0]} {b' / '.join(reply[1]).decode(errors='replace')}")

    def close(self):
        try:
            self.command(b"QUIT")
        except (OSError, SessionError):
            pass
        self.sock.close()


class SessionError(Exception):
    pass


def chunks(message, variant):
    """The BDAT commands with their data, as a list of (command, data)."""
    if variant == 2:
        return [(b"BDAT %d LAST" % len(message), message)]
    first = message.find(b"\r\n")
    cuts = [0, first + 1] if 0 <= first < len(message) - 2 else [0]
    position = cuts[-1]
    while position + 4096 < len(message) - 1:
        position += 4096
        cuts.append(position)
    cuts.append(len(message) - 1)
    pieces = [message[a:b] for a, b in zip(cuts, cuts[1:] + [len(message)]) if b > a]
    commands = [(b"BDAT %d" % len(piece), piece) for piece in pieces]
    if variant == 0:
        last = pieces[-1]
        commands[-1] = (b"BDAT %d LAST" % len(last), last)
    else:
        commands.append((b"BDAT 0 LAST", b""))
    return commands


def send_one(session, args, index, path, recipients):
    with open(path, "rb") as f:
        message = EOL.sub(b"\r\n", f.read())
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    body = b" BODY=8BITMIME" if re.search(rb"[\x80-\xff]", message) else b""

    steps = [("MAIL", b"MAIL FROM:<%s>%s\r\n" % (args.mail_from.encode(), body), 250)]
    steps += [("RCPT", b"RCPT TO:<%s>\r\n" % r.encode(), 250) for r in recipients]
    steps += [("BDAT", cmd + b"\r\n" + data, 250) for cmd, data in chunks(message, index % 3)]

    replies = []
    if args.pipeline:
        session.sock.sendall(b"".join(wire for _, wire, _ in steps))
        replies = [session.reply() for _ in steps]
    else:
        for _, wire, _ in steps:
            session.sock.sendall(wire)
            replies.append(session.reply())
            if replies[-1][0] >= 400:
                break

    for (stage, _, code), (got, lines) in zip(steps, replies):
        if got != code:
            session.command(b"RSET")
            text = b" / ".join(lines).decode(errors="replace")
            return f"refused\t{path}\t{stage} {got} {text}"
    queued = QUEUED.search(replies[-1][1][-1])
    queue_id = queued.group(1).decode() if queued else "?"
    return f"queued\t{path}\t{queue_id}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mail-from", default="sender@example.com")
    parser.add_argument("--starttls", action="store_true")
    parser.add_argument("--pipeline", action="store_true")
    parser.add_argument("manifest")
    args = parser.parse_args()

    ok = True
    session = None
    with open(args.manifest, encoding="utf-8") as f:
        jobs = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    for index, (path, recipients) in enumerate(jobs):
        try:
            if session is None:
                session = Session(args.host, args.port, args.starttls)
            line = send_one(session, args, index, path, recipients.split(","))
        except (OSError, SessionError) as e:
            line = f"refused\t{path}\tSESSION {type(e).__name__}: {e}"
            session = None
        ok &= line.startswith("queued\t")
        print(line, flush=True)
    if session is not None:
        session.close()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
