#!/usr/bin/env python3
"""The appliance's boot test, inside a network namespace that boot-test.sh made.

Boots out/moat-appliance.raw in qemu-system-x86_64 under software emulation (-accel tcg), once
with SeaBIOS and once with OVMF (UEFI). The image is write-protected: the VM's disk is a qcow2
overlay larger than the image (so first boot has a partition to grow) and is opened with
snapshot=on. The VM's network is qemu's user networking with host ports forwarded to the guest
from this namespace's loopback. The namespace has no interface but its loopback, so nothing the
guest sends can leave it (freshclam's and DNS's attempts fail at once with "network
unreachable"). qemu's restrict=on would say the same, but it also keeps DHCP from offering a
nameserver, and Moat does not start without one (see README.md). Then, from outside the VM:

- mail flows: a mailbox is added (through the QEMU guest agent, as a hypervisor's admin would),
  swaks sends to port 25, and the message is read back over IMAPS and POP3S;
- the DNSBL zone bl.moat.internal answers over UDP and TCP (dig);
- clamd finds EICAR: the gateway refuses it as an attachment, and clamdscan (through the guest
  agent) finds it too and passes a clean file;
- the webmail's login page loads over HTTPS and the mailbox logs in;
- no unit failed: the serial console never says "Failed to start", and systemd says "running".

Prints one line per check and ends with "N passed, N failed"; exits 1 if any failed. The VM is
always killed on exit. Timings (boot to the SMTP banner) go to out/boot-test/timings.txt.
"""

import argparse
import base64
import html
import http.cookiejar
import imaplib
import json
import os
import poplib
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("MOAT_IMAGE_OUT") or os.path.join(HERE, "out")

# Host ports on this namespace's loopback, forwarded to the guest's services.
FORWARDS = {
    "smtp": ("tcp", 2525, 25),
    "imap": ("tcp", 1143, 143),
    "imaps": ("tcp", 1993, 993),
    "pop3s": ("tcp", 1995, 995),
    "dns": ("tcp", 5353, 53),
    "dns_udp": ("udp", 5353, 53),
    "https": ("tcp", 8443, 443),
    "http": ("tcp", 8080, 80),
}
LOOPBACK = "127.0.0.1"

# Under software emulation a boot to the SMTP banner takes about a minute; allow five.
BOOT_DEADLINE = 300
# Time for boot-time services to settle after the banner (clamd, php-fpm, first-boot work).
SETTLE_DEADLINE = 180
DELIVERY_DEADLINE = 60
VM_MEMORY_MIB = 2048

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"

DOMAIN = "example.com"
MAILBOX = f"alice@{DOMAIN}"
SENDER = "sender@example.org"
ZONE = "bl.moat.internal"


class Checks:
    """Counts checks and prints each as it is decided."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def record(self, name, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        line = f"{'ok  ' if ok else 'FAIL'} {name}"
        if detail:
            line += f": {detail}"
        print(line, flush=True)
        return ok

    def run(self, name, function):
        """Runs function, which returns a detail string or raises; an exception fails the check."""
        try:
            detail = function()
        except Exception as error:  # A check's failure of any kind is reported, not raised.
            return self.record(name, False, f"{type(error).__name__}: {error}")
        return self.record(name, True, detail or "")


class GuestAgent:
    """A client of the QEMU guest agent's JSON protocol over the VM's virtio serial port."""

    def __init__(self, path):
        self.path = path
        self.sock = None
        self.buffer = b""

    def connect(self, deadline):
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(5)
                self.sock.connect(self.path)
                self._sync()
                return
            except (OSError, TimeoutError, ValueError):
                self.sock.close()
                self.sock = None
                self.buffer = b""
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def _sync(self):
        # guest-sync-delimited answers after a 0xFF octet, which flushes anything stale.
        token = secrets.randbelow(2**31)
        self._send({"execute": "guest-sync-delimited", "arguments": {"id": token}})
        while b"\xff" not in self.buffer:
            self._receive()
        self.buffer = self.buffer.split(b"\xff", 1)[1]
        if self._reply() != token:
            raise ValueError("guest agent out of step")

    def _send(self, message):
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def _receive(self):
        data = self.sock.recv(65536)
        if not data:
            raise OSError("guest agent closed the connection")
        self.buffer += data

    def _reply(self):
        while b"\n" not in self.buffer:
            self._receive()
        line, self.buffer = self.buffer.split(b"\n", 1)
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"guest agent: {reply['error']}")
        return reply["return"]

    def call(self, command, **arguments):
        self._send({"execute": command, "arguments": arguments})
        return self._reply()

    def exec(self, argv, stdin=b"", timeout=60):
        """Runs argv in the guest; returns (exit code, stdout, stderr)."""
        started = self.call(
            "guest-exec",
            path=argv[0],
            arg=argv[1:],
            **{"input-data": base64.b64encode(stdin).decode(), "capture-output": True},
        )
        deadline = time.monotonic() + timeout
        while True:
            status = self.call("guest-exec-status", pid=started["pid"])
            if status["exited"]:
                out = base64.b64decode(status.get("out-data", ""))
                err = base64.b64decode(status.get("err-data", ""))
                return status.get("exitcode", -1), out.decode(errors="replace"), err.decode(
                    errors="replace"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{argv} still running after {timeout} s")
            time.sleep(0.5)

    def shell(self, command, stdin=b"", timeout=60):
        return self.exec(["/bin/sh", "-c", command], stdin, timeout)

    def close(self):
        if self.sock:
            self.sock.close()


class Vm:
    """One qemu-system-x86_64 run of the image; killed on close whatever happened."""

    def __init__(self, firmware, image, workdir, iso=None):
        self.firmware = firmware
        self.workdir = workdir
        self.serial_log = os.path.join(workdir, "serial.log")
        self.agent_path = os.path.join(workdir, "qga.sock")
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)

        # A qcow2 overlay 1 GiB larger than the image: the image is only read, and first boot
        # finds room to grow the root partition into. snapshot=on keeps even the overlay clean.
        overlay = os.path.join(workdir, "disk.qcow2")
        size = os.path.getsize(image) + 2**30
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", image, overlay,
             str(size)],
            check=True,
        )
        forwards = ",".join(
            f"hostfwd={proto}:{LOOPBACK}:{host}-:{guest}"
            for proto, host, guest in FORWARDS.values()
        )
        if iso is None:
            media = ["-drive", f"file={overlay},format=qcow2,if=virtio,snapshot=on"]
        elif firmware == "bios":
            # The hybrid ISO as a CD under BIOS, and as a USB stick under UEFI.
            media = ["-drive", f"file={iso},format=raw,media=cdrom,readonly=on"]
        else:
            media = ["-drive", f"file={iso},format=raw,if=none,id=stick,readonly=on",
                     "-device", "qemu-xhci", "-device", "usb-storage,drive=stick"]
        command = [
            "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-smp", "2",
            "-m", str(VM_MEMORY_MIB), "-display", "none", "-no-reboot",
            "-serial", f"file:{self.serial_log}",
            *media,
            "-netdev", f"user,id=net0,{forwards}",
            "-device", "virtio-net-pci,netdev=net0",
            "-chardev", f"socket,id=qga,path={self.agent_path},server=on,wait=off",
            "-device", "virtio-serial-pci",
            "-device", "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
        ]
        if firmware == "uefi":
            variables = os.path.join(workdir, "OVMF_VARS.fd")
            shutil.copy(OVMF_VARS, variables)
            command += [
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={variables}",
            ]
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=open(os.path.join(workdir, "qemu.log"), "w"),
            stderr=subprocess.STDOUT,
        )
        self.agent = GuestAgent(self.agent_path)

    def serial(self):
        try:
            with open(self.serial_log, errors="replace") as log:
                return log.read()
        except FileNotFoundError:
            return ""

    def alive(self):
        return self.process.poll() is None

    def close(self):
        self.agent.close()
        if self.alive():
            self.process.kill()
        self.process.wait()


def port(name):
    return FORWARDS[name][1]


def smtp_banner():
    """The SMTP greeting, or None while the guest's port 25 does not answer yet."""
    try:
        with socket.create_connection((LOOPBACK, port("smtp")), timeout=10) as sock:
            sock.settimeout(10)
            banner = sock.recv(512).decode(errors="replace")
            sock.sendall(b"QUIT\r\n")
    except OSError:
        return None
    return banner if banner.startswith("220") else None


def wait_for_banner(vm):
    while time.monotonic() - vm.started < BOOT_DEADLINE:
        if not vm.alive():
            raise RuntimeError("qemu exited during boot")
        banner = smtp_banner()
        if banner:
            return time.monotonic() - vm.started, banner.strip()
        time.sleep(1)
    raise TimeoutError(f"no SMTP banner within {BOOT_DEADLINE} s")


def dovecot_ready():
    # Dovecot's IMAP greeting ends with "ready." once it serves; wait for it.
    deadline = time.monotonic() + SETTLE_DEADLINE
    last = ""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOOPBACK, port("imap")), timeout=10) as sock:
                sock.settimeout(10)
                last = sock.recv(512).decode(errors="replace").strip()
                if "ready" in last:
                    return last
        except OSError as error:
            last = str(error)
        time.sleep(2)
    raise TimeoutError(f"Dovecot not ready: {last!r}")


def system_running(agent):
    """Waits until systemd has finished starting; returns its state and the failed units."""
    deadline = time.monotonic() + SETTLE_DEADLINE
    while True:
        _, state, _ = agent.exec(["/bin/systemctl", "is-system-running"])
        state = state.strip()
        if state not in ("starting", "initializing") or time.monotonic() > deadline:
            break
        time.sleep(2)
    _, failed, _ = agent.exec(["/bin/systemctl", "--failed", "--no-legend", "--plain"])
    return state, failed.strip()


def add_mailbox(agent, password):
    code, out, err = agent.exec(
        ["/usr/sbin/moat-mailbox", "add", MAILBOX], stdin=password.encode() + b"\n"
    )
    if code != 0:
        raise RuntimeError(f"moat-mailbox exited {code}: {out}{err}")
    # The gateway restarts to take the new domain; wait for its banner again.
    deadline = time.monotonic() + 60
    while not smtp_banner():
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway did not come back after moat-mailbox")
        time.sleep(1)
    return out.strip()


def send_with_swaks(token):
    result = subprocess.run(
        ["swaks", "--server", f"{LOOPBACK}:{port('smtp')}", "--from", SENDER, "--to", MAILBOX,
         "--tls", "--header", f"Subject: boot test {token}", "--body", f"token {token}\n",
         "--timeout", "60"],
        capture_output=True, text=True, timeout=120,
    )
    queued = re.search(r"<~\s+250 .*queued.*", result.stdout)
    if result.returncode != 0 or not queued:
        raise RuntimeError(f"swaks exited {result.returncode}: {result.stdout[-1500:]}")
    return queued.group(0).lstrip("<~ ").strip()


def virus_refused():
    """EICAR as an attachment through the gateway, which asks clamd and refuses it."""
    attachment = os.path.join(OUT, "boot-test", "eicar.com")
    with open(attachment, "wb") as file:
        file.write(eicar())
    result = subprocess.run(
        ["swaks", "--server", f"{LOOPBACK}:{port('smtp')}", "--from", SENDER, "--to", MAILBOX,
         "--header", "Subject: boot test virus", "--attach", f"@{attachment}",
         "--timeout", "60"],
        capture_output=True, text=True, timeout=120,
    )
    refused = re.search(r"<\*\*\s+(5\d\d .*)", result.stdout)
    if result.returncode == 0 or not refused:
        raise RuntimeError(f"swaks exited {result.returncode}: {result.stdout[-1500:]}")
    return refused.group(1).strip()


def unverified_tls():
    # The appliance's certificate is self-signed at first boot.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def read_over_imap(password, token):
    deadline = time.monotonic() + DELIVERY_DEADLINE
    while True:
        imap = imaplib.IMAP4_SSL(LOOPBACK, port("imaps"), ssl_context=unverified_tls(), timeout=30)
        try:
            imap.login(MAILBOX, password)
            imap.select("INBOX", readonly=True)
            _, found = imap.search(None, "BODY", token)
            numbers = found[0].split()
            if numbers:
                _, data = imap.fetch(numbers[0], "(RFC822)")
                message = data[0][1].decode(errors="replace")
                if f"Subject: boot test {token}" not in message:
                    raise RuntimeError("the message read back lacks its Subject")
                return f"message {numbers[0].decode()} of INBOX has the token"
        finally:
            imap.logout()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no message with the token in INBOX after {DELIVERY_DEADLINE} s")
        time.sleep(2)


def read_over_pop3(password, token):
    pop = poplib.POP3_SSL(LOOPBACK, port("pop3s"), context=unverified_tls(), timeout=30)
    try:
        pop.user(MAILBOX)
        pop.pass_(password)
        count, _ = pop.stat()
        for number in range(1, count + 1):
            _, lines, _ = pop.retr(number)
            if any(token.encode() in line for line in lines):
                return f"message {number} of {count} has the token"
        raise RuntimeError(f"none of {count} messages has the token")
    finally:
        pop.quit()


def dig(name, record, tcp):
    command = ["dig", f"@{LOOPBACK}", "-p", str(port("dns")), name, record, "+tries=1",
               "+time=5", "+tcp" if tcp else "+notcp", "+noall", "+answer", "+comments"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"dig exited {result.returncode}: {result.stdout}{result.stderr}")
    return result.stdout


def dnsbl_listed(tcp):
    answer = dig(f"2.0.0.127.{ZONE}", "A", tcp)
    if "status: NOERROR" not in answer or not re.search(r"\sA\s+127\.0\.0\.2\b", answer):
        raise RuntimeError(f"expected 127.0.0.2, got: {answer}")
    return f"2.0.0.127.{ZONE} A 127.0.0.2 over {'TCP' if tcp else 'UDP'}"


def dnsbl_not_listed():
    answer = dig(f"1.2.0.192.{ZONE}", "A", False)
    if "status: NXDOMAIN" not in answer:
        raise RuntimeError(f"expected NXDOMAIN, got: {answer}")
    return f"1.2.0.192.{ZONE} NXDOMAIN"


def eicar():
    # The EICAR test file, put together here so this file is not itself a "virus".
    return b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def clamd_finds_eicar(agent):
    code, found, err = agent.exec(["/usr/bin/clamdscan", "--no-summary", "-"], stdin=eicar())
    if code != 1 or "FOUND" not in found:
        raise RuntimeError(f"clamdscan exited {code}: {found}{err}")
    code, out, err = agent.exec(["/usr/bin/clamdscan", "--no-summary", "-"], stdin=b"clean\n")
    if code != 0:
        raise RuntimeError(f"clamdscan of a clean file exited {code}: {out}{err}")
    return f"{found.strip()}; a clean file passes"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def webmail_login(password):
    base = f"https://{LOOPBACK}:{port('https')}/"
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=unverified_tls()),
        urllib.request.HTTPCookieProcessor(jar),
        NoRedirect,
    )
    page = opener.open(base, timeout=60).read().decode(errors="replace")
    token = re.search(r'name="_token" value="([^"]+)"', page)
    if "rcmloginuser" not in page or not token:
        raise RuntimeError(f"no Roundcube login form: {page[:300]!r}")

    form = urllib.parse.urlencode({
        "_token": html.unescape(token.group(1)), "_task": "login", "_action": "login",
        "_timezone": "UTC", "_url": "", "_user": MAILBOX, "_pass": password,
    }).encode()
    try:
        reply = opener.open(base + "?_task=login", data=form, timeout=60)
        status, location = reply.status, reply.headers.get("Location", "")
    except urllib.error.HTTPError as error:
        status, location = error.code, error.headers.get("Location", "")
    if status != 302 or "_task=mail" not in location:
        raise RuntimeError(f"login answered {status} to {location!r}")
    return "login page over HTTPS, and the mailbox logged in"


def plain_http_redirects():
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(f"http://{LOOPBACK}:{port('http')}/", timeout=30)
    except urllib.error.HTTPError as error:
        if error.code == 301 and error.headers.get("Location", "").startswith("https://"):
            return "301 to https"
        raise
    raise RuntimeError("plain HTTP served a page")


def root_grown(agent, image):
    _, out, _ = agent.exec(["/bin/findmnt", "-bno", "SIZE", "/"])
    size = int(out.strip())
    if size <= os.path.getsize(image) - 2**27:
        raise RuntimeError(f"root is {size} octets; the image is {os.path.getsize(image)}")
    return f"root file system is {size // 2**20} MiB on a disk 1 GiB larger than the image"


# What the guest says about itself when a check failed, kept beside the serial log.
DIAGNOSTICS = [
    "systemctl --failed --no-pager",
    "journalctl -b --no-pager -o short-monotonic -n 400 -u moat-gateway -u moat-roles "
    "-u dovecot -u clamav-daemon -u nginx -u php8.2-fpm -u moat-firstboot",
    "ss -ltnup",
    "cat /run/moat/gateway.toml",
]


def diagnose(vm):
    path = os.path.join(vm.workdir, "diagnostics.txt")
    with open(path, "w") as report:
        try:
            if vm.agent.sock is None:
                vm.agent.connect(time.monotonic() + 60)
            for command in DIAGNOSTICS:
                code, out, err = vm.agent.shell(command)
                report.write(f"$ {command}  (exit {code})\n{out}{err}\n")
        except Exception as error:  # Diagnostics are best effort; the checks decide.
            report.write(f"guest agent unavailable: {error}\n")
    print(f"     diagnostics: {path}; serial log: {vm.serial_log}", flush=True)


def boot_and_check(target, image, iso, checks, timings):
    firmware = target.removeprefix("iso-")
    live = target.startswith("iso-")
    vm = Vm(firmware, image, os.path.join(OUT, "boot-test", target), iso if live else None)
    failed_before = checks.failed
    try:
        prefix = f"{target}:"
        booted = checks.run(f"{prefix} boots to the SMTP banner", lambda: "%.0f s: %s" % (
            timings.setdefault(target, wait_for_banner(vm))))
        if not booted:
            return
        checks.run(f"{prefix} Dovecot says ready", dovecot_ready)
        vm.agent.connect(time.monotonic() + SETTLE_DEADLINE)

        password = secrets.token_urlsafe(12)
        token = secrets.token_hex(8)
        if checks.run(f"{prefix} moat-mailbox adds {MAILBOX}", lambda: add_mailbox(vm.agent,
                                                                                   password)):
            if checks.run(f"{prefix} swaks sends to port 25", lambda: send_with_swaks(token)):
                checks.run(f"{prefix} IMAP reads it back", lambda: read_over_imap(password, token))
                checks.run(f"{prefix} POP3 reads it back", lambda: read_over_pop3(password, token))
                checks.run(f"{prefix} the gateway refuses EICAR (clamd)", virus_refused)
        checks.run(f"{prefix} DNSBL answers over UDP", lambda: dnsbl_listed(tcp=False))
        checks.run(f"{prefix} DNSBL answers over TCP", lambda: dnsbl_listed(tcp=True))
        checks.run(f"{prefix} DNSBL says NXDOMAIN for an unlisted address", dnsbl_not_listed)
        checks.run(f"{prefix} clamd finds EICAR", lambda: clamd_finds_eicar(vm.agent))
        checks.run(f"{prefix} webmail login over HTTPS", lambda: webmail_login(password))
        checks.run(f"{prefix} plain HTTP redirects to HTTPS", plain_http_redirects)
        if not live:
            checks.run(f"{prefix} first boot grew the root file system",
                       lambda: root_grown(vm.agent, image))

        def no_failed_units():
            state, failed = system_running(vm.agent)
            serial = vm.serial()
            failures = [line for line in serial.splitlines() if "Failed to start" in line]
            if failures or state != "running":
                raise RuntimeError(f"systemd is {state}; failed units: {failed or 'none'}; "
                                   f"serial log: {failures}")
            return "systemd is running, and the serial log has no 'Failed to start'"

        checks.run(f"{prefix} no unit failed", no_failed_units)
    finally:
        if checks.failed > failed_before and vm.alive():
            diagnose(vm)
        vm.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", default=["bios", "uefi"],
                        choices=["bios", "uefi", "iso-bios", "iso-uefi"],
                        help="the disk image under BIOS or UEFI, or the live ISO as a CD under "
                        "BIOS or a USB stick under UEFI (default: bios uefi)")
    parser.add_argument("--image", default=os.path.join(OUT, "moat-appliance.raw"))
    parser.add_argument("--iso", default=os.path.join(OUT, "moat-appliance.iso"))
    args = parser.parse_args()

    # A signal ends the run through the finally blocks, which kill the VM.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    checks = Checks()
    timings = {}
    for target in args.targets:
        boot_and_check(target, args.image, args.iso, checks, timings)

    os.makedirs(os.path.join(OUT, "boot-test"), exist_ok=True)
    with open(os.path.join(OUT, "boot-test", "timings.txt"), "w") as file:
        for target, (seconds, _) in timings.items():
            file.write(f"boot_to_smtp_banner_{target.replace('-', '_')}_s={seconds:.0f}\n")
    print(f"{checks.passed} passed, {checks.failed} failed", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
