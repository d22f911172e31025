#!/usr/bin/env python3
"""Send message files to an SMTP server with smtplib, as an ordinary Python client would.

The manifest has one message a line: the file's path, a tab, and its recipients separated by
commas. Each file is read as bytes and never decoded. smtplib sends bytes as they are, so line
endings are made CRLF here first (bare LF and bare CR too), exactly as smtplib does for text;
smtplib then dot-stuffs and adds the final CRLF if missing. Messages with 8-bit bytes are sent
with BODY=8BITMIME.

The messages are split into --sessions contiguous parts, each sent in its own SMTP session
(with --parallel, all sessions at once, each in its own thread). For every message one line is
printed:

    queued<TAB>PATH<TAB>QUEUE-ID        the DATA reply was 250 ... queued as QUEUE-ID
    refused<TAB>PATH<TAB>STAGE CODE TEXT

The exit status is 0 when every message was queued, 1 otherwise.
"""

import argparse
import re
import smtplib
import ssl
import sys
import threading

EOL = re.compile(rb"\r\n|\r|\n")
QUEUED = re.compile(rb"queued as (\S+)")


def wire_form(raw):
    """Line endings as smtplib's _fix_eols gives them for a str message."""
    return EOL.sub(b"\r\n", raw)


def open_session(args):
    client = smtplib.SMTP(args.host, args.port, local_hostname="client.example.com", timeout=60)
    client.ehlo()
    if args.starttls:
        # Moat's certificate is self-signed: the tests check encryption, not identity.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client.starttls(context=context)
        client.ehlo()
    return client


def send_one(client, args, path, recipients):
    """Sends one message; returns the output line."""
    with open(path, "rb") as f:
        message = wire_form(f.read())
    options = ["BODY=8BITMIME"] if re.search(rb"[\x80-\xff]", message) else []

    code, text = client.mail(args.mail_from, options)
    if code != 250:
        client.rset()
        return f"refused\t{path}\tMAIL {code} {text.decode(errors='replace')}"
    for rcpt in recipients:
        code, text = client.rcpt(rcpt)
        if code not in (250, 251):
            client.rset()
            return f"refused\t{path}\tRCPT {code} {text.decode(errors='replace')}"
    code, text = client.data(message)
    if code != 250:
        return f"refused\t{path}\tDATA {code} {text.decode(errors='replace')}"
    queued = QUEUED.search(text)
    queue_id = queued.group(1).decode() if queued else "?"
    return f"queued\t{path}\t{queue_id}"


def send_session(args, jobs, results, index):
    lines = []
    client = None
    for path, recipients in jobs:
        try:
            if client is None:
                client = open_session(args)
            lines.append(send_one(client, args, path, recipients))
        except smtplib.SMTPResponseException as e:
            lines.append(f"refused\t{path}\tSESSION {e.smtp_code} {e.smtp_error!r}")
            client = None
        except (smtplib.SMTPException, OSError) as e:
            lines.append(f"refused\t{path}\tSESSION {type(e).__name__}: {e}")
            client = None
    if client is not None:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            pass
    results[index] = lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mail-from", default="sender@example.com")
    parser.add_argument("--starttls", action="store_true")
    parser.add_argument("--sessions", type=int, default=1)
    parser.add_argument("--parallel", action="store_true")
    parser.add_argument("manifest")
    args = parser.parse_args()

    jobs = []
    with open(args.manifest, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                path, recipients = line.rstrip("\n").split("\t")
                jobs.append((path, recipients.split(",")))

    sessions = max(1, min(args.sessions, len(jobs)))
    size = -(-len(jobs) // sessions)
    parts = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    results = [None] * len(parts)
    threads = [
        threading.Thread(target=send_session, args=(args, part, results, i))
        for i, part in enumerate(parts)
    ]
    for thread in threads:
        thread.start()
        if not args.parallel:
            thread.join()
    for thread in threads:
        thread.join()

    ok = True
    for lines in results:
        for line in lines:
            ok &= line.startswith("queued\t")
            print(line)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
