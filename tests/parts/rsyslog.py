"""Debian's rsyslogd as a syslog receiver for tests: TCP or TLS, octet-counted framing.

    with rsyslog_receiver(tmp_path, host="127.0.0.2") as syslog:          # plain TCP
    with rsyslog_receiver(tmp_path, tls=test_ca) as syslog:              # TLS (rsyslog-gnutls)
        syslog.address                    # "127.0.0.2:PORT" for settings.audit.ship syslog
        syslog.wait_for(10_000, timeout=60)   # parsed messages once that many arrived
        syslog.messages()                 # every message so far: raw, msg, app, sd, ...
        syslog.kill(); syslog.start()     # crash it mid-run, bring it back on the same port

What it is. The real ``rsyslogd`` (Debian packages ``rsyslog`` and, for TLS,
``rsyslog-gnutls``), started in the foreground (``-n``) with a configuration this module
writes into the test's directory: its own work directory and pid file, no system inputs
(no imuxsock, no imklog: it never reads or writes the machine's own logs), one ``imtcp``
input on HOST:free-port whose messages go to one file (``received.jsonl``, one JSON object
per message). imtcp takes octet-counted framing (RFC 6587 §3.4.1) and also LF-terminated
frames; with TLS the gtls driver requires TLS on every connection and presents a
certificate from the test CA for HOST (and ``names``); clients are not authenticated
(``anon``). rsyslog's own status messages go to ``internal.log``, never to the output.

rsyslog's default escaping of control characters on receive (LF -> ``#012``) is off, so
the file holds what arrived. Each received message is recorded with rsyslog's parsed
RFC 5424 fields: ``raw`` (the
whole message as received), ``timestamp`` (as reported), ``hostname``, ``app``, ``procid``,
``msgid``, ``sd`` (structured data), ``msg``, ``facility``, ``severity``.

Not implemented here: RELP, UDP, client-certificate authentication (x509/name).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.parts.tlsfiles import CertFiles, write_cert
from tests.processes import kill_now, stop_gently
from tests.upstream import free_port

if TYPE_CHECKING:
    from tests.conftest import TestCA

__all__ = ["RsyslogReceiver", "find_rsyslogd", "rsyslog_receiver"]

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
MAX_MESSAGE = "256k"  # audit records with a hash chain are longer than rsyslog's 8k default

_FIELDS = [("raw", "rawmsg"), ("timestamp", "timereported"), ("hostname", "hostname"),
           ("app", "app-name"), ("procid", "procid"), ("msgid", "msgid"),
           ("sd", "structured-data"), ("msg", "msg"), ("facility", "syslogfacility"),
           ("severity", "syslogseverity")]


def find_rsyslogd() -> str:
    found = shutil.which("rsyslogd") or (
        "/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)
    if found is None:
        raise RuntimeError("rsyslogd not found: apt-get install rsyslog rsyslog-gnutls "
                           "(.ci/run installs them)")
    return found


def _config(workdir: Path, host: str, port: int, output: Path, tls: CertFiles | None,
            ca_path: str | None) -> str:
    properties = "\n".join(
        f'    property(outname="{out}" name="{name}" format="jsonf"'
        + (' dateFormat="rfc3339"' if name == "timereported" else "") + ")"
        for out, name in _FIELDS)
    if tls is not None:
        driver = (f'global(defaultNetstreamDriverCAFile="{ca_path}"\n'
                  f'       defaultNetstreamDriverCertFile="{tls.cert}"\n'
                  f'       defaultNetstreamDriverKeyFile="{tls.key}")\n'
                  'module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"\n'
                  '       streamDriver.authMode="anon")\n')
    else:
        driver = 'module(load="imtcp")\n'
    return f"""# Written by tests/parts/rsyslog.py: a receiver for one test, nothing else.
global(workDirectory="{workdir}" maxMessageSize="{MAX_MESSAGE}"
       parser.escapeControlCharactersOnReceive="off")
{driver}
template(name="egress_test_json" type="list" option.jsonf="on") {{
{properties}
}}
ruleset(name="received") {{
    action(type="omfile" file="{output}" template="egress_test_json"
           flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imtcp" address="{host}" port="{port}" ruleset="received"
      supportOctetCountedFraming="on")
# rsyslog's own messages (start, stop, errors): the default ruleset, kept apart.
*.* action(type="omfile" file="{workdir / 'internal.log'}")
"""


class RsyslogReceiver:
    """One rsyslogd. Use ``rsyslog_receiver`` so it is always stopped."""

    def __init__(self, workdir: Path, *, host: str, tls: CertFiles | None = None,
                 ca_path: str | None = None) -> None:
        self.workdir = workdir
        self.host = host
        self.port = free_port(host)
        self.tls = tls
        self.ca_path = ca_path
        self.output = workdir / "received.jsonl"
        self.config_path = workdir / "rsyslog.conf"
        self.pid_file = workdir / "rsyslogd.pid"
        self.log_file = workdir / "rsyslogd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start (or start again, on the same port; what was received stays in the file)."""
        if self.running:
            raise RuntimeError("rsyslogd is already running")
        self.config_path.write_text(_config(self.workdir, self.host, self.port, self.output,
                                            self.tls, self.ca_path))
        self.pid_file.unlink(missing_ok=True)
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                [find_rsyslogd(), "-n", "-f", str(self.config_path), "-i",
                 str(self.pid_file)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.workdir)
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(int(START_TIMEOUT / 0.05) + 1):
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited with {self._proc.returncode}:\n"
                                   f"{self.log_tail()}")
            with contextlib.suppress(OSError), \
                    socket.create_connection((self.host, self.port), timeout=0.5):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        raise RuntimeError(f"rsyslogd not listening after {START_TIMEOUT}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, as a crash would: whatever it had not written yet is lost."""
        kill_now(self._proc, STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM (rsyslogd flushes and exits), then SIGKILL if it lingers."""
        stop_gently(self._proc, STOP_TIMEOUT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 20) -> str:
        parts = []
        for path in (self.log_file, self.workdir / "internal.log"):
            with contextlib.suppress(OSError):
                parts += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(parts) or "(no log)"

    def messages(self) -> list[dict[str, Any]]:
        """Every message written so far, in the order rsyslog wrote them."""
        if not self.output.exists():
            return []
        out = []
        for line in self.output.read_text(errors="replace").splitlines():
            if line.strip():
                with contextlib.suppress(ValueError):  # a line being written right now
                    out.append(json.loads(line))
        return out

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The messages, once at least ``count`` arrived; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 1):
            got = self.messages()
            if len(got) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if len(got) < count:
            raise AssertionError(f"rsyslog received {len(got)} of {count} messages in "
                                 f"{timeout}s:\n{self.log_tail()}")
        return got


@contextlib.contextmanager
def rsyslog_receiver(workdir: Path, *, host: str = "127.0.0.2", tls: TestCA | None = None,
                     names: list[str] | None = None) -> Iterator[RsyslogReceiver]:
    """Run rsyslogd receiving on host:free-port (TLS with a test-CA certificate for
    ``host`` and ``names`` when ``tls`` is the test CA); stopped on the way out."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert = None
    if tls is not None:
        cert = write_cert(tls.ca, [*(names or ["syslog.logs.test"]), host], workdir, "rsyslog")
    receiver = RsyslogReceiver(workdir, host=host, tls=cert,
                               ca_path=tls.path if tls is not None else None)
    try:
        receiver.start()
        yield receiver
    finally:
        receiver.stop()
