"""An FTP control connection that logs in when needed, uses binary mode, and turns ftplib's errors into ours.

Reply classes (RFC 959): 421 and failed connects mean the server is away (DeviceUnavailable); 530 (login refused) is
treated the same, so a wrong password waits for a fix instead of parking every file; 425/426/450/451/452 and 552 (a
full disk: pyftpdlib answers 426, others 552) are transient; other 5xx replies are permanent.
"""
import ftplib
import socket
import time
from contextlib import contextmanager

from filesync.errors import DeviceUnavailable, FilesyncError, PermanentError, TransientError
from filesync.options import Option, port_number, positive, resolve_secret, secret_options

OPTIONS = [
    Option("host", str),
    Option("port", int, 21, port_number),
    Option("user", str, "anonymous"),
    Option("root", str, "/"),
    Option("timeout", float, 30.0, positive),
    Option("passive", bool, True),
] + secret_options()

IDLE_CHECK_SECONDS = 30.0
TRANSIENT_CODES = ("425", "426", "450", "451", "452", "552")
UNAVAILABLE_CODES = ("421", "530")


def classify(error, what):
    """Our error kind for an exception raised while talking FTP; `what` says what we were doing."""
    if isinstance(error, FilesyncError):
        return error
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    code = text[:3]
    if isinstance(error, (ftplib.error_temp, ftplib.error_perm, ftplib.error_reply)):
        if code in UNAVAILABLE_CODES:
            return DeviceUnavailable(f"{what}: server says {text}")
        if code in TRANSIENT_CODES or isinstance(error, ftplib.error_temp):
            return TransientError(f"{what}: server says {text}")
        return PermanentError(f"{what}: server says {text}")
    if isinstance(error, (OSError, EOFError, ftplib.error_proto)):
        return DeviceUnavailable(f"{what}: {text}")
    return error


class FtpConnection:
    """One logged-in control connection, made on first use and again after any failure."""

    def __init__(self, options, key):
        self.options, self.key = options, key
        self._ftp = None
        self._last_used = 0.0

    @property
    def address(self):
        """host:port, for messages."""
        return f"{self.options['host']}:{self.options['port']}"

    def _connect(self):
        ftp = ftplib.FTP(timeout=self.options["timeout"])
        try:
            ftp.connect(self.options["host"], self.options["port"])
            ftp.login(self.options["user"], resolve_secret(self.options, self.key))
            ftp.set_pasv(self.options["passive"])
            ftp.voidcmd("TYPE I")
        except BaseException:
            ftp.close()
            raise
        return ftp

    @contextmanager
    def session(self, what):
        """Yield a logged-in ftplib.FTP; on any failure drop the connection and raise our error kind for `what`."""
        try:
            if self._ftp is not None and time.monotonic() - self._last_used > IDLE_CHECK_SECONDS:
                try:
                    self._ftp.voidcmd("NOOP")
                except (OSError, EOFError, ftplib.Error):
                    self.close()
            if self._ftp is None:
                self._ftp = self._connect()
            yield self._ftp
            self._last_used = time.monotonic()
        except BaseException as error:
            self.close()
            mapped = classify(error, f"{what} on {self.address}")
            if mapped is error:
                raise
            raise mapped from None

    def close(self):
        """Drop the connection (politely if it still answers)."""
        if self._ftp is not None:
            try:
                self._ftp.sock and self._ftp.sock.settimeout(2)
                self._ftp.quit()
            except (OSError, EOFError, ftplib.Error, socket.timeout, AttributeError):
                pass
            self._ftp.close()
            self._ftp = None


def size_or_none(ftp, path):
    """SIZE of `path`, or None when the server says it does not exist (550)."""
    # ftplib leaves the connection in ASCII after a listing, and servers refuse SIZE there (pyftpdlib answers 550)
    ftp.voidcmd("TYPE I")
    try:
        return ftp.size(path)
    except ftplib.error_perm as error:
        if str(error).startswith("550"):
            return None
        raise
