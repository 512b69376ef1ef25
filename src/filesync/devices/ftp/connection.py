"""An FTP control connection that logs in when needed, uses binary mode, and turns ftplib's errors into ours.

Reply classes (RFC 959): 421 and failed connects mean the server is away (DeviceUnavailable); 530 (login refused) is
AuthRefused, so a wrong password waits for a fix instead of parking every file; 425/426/450/451/452 and 552 (a full
disk: pyftpdlib answers 426, others 552) are transient; other 5xx replies are permanent.

TLS (`tls: true`): explicit FTPS (RFC 4217): AUTH TLS before the password is sent, then PBSZ 0 and PROT P so every
data connection is encrypted too. The server's certificate is checked against the system's CAs or `ca_bundle`, with
its host name; a certificate that is not accepted, and a server that does not offer AUTH TLS, are DeviceUnavailable
with one line saying so. Nothing ever falls back to clear text.

Names travel as bytes. ftplib decodes the control connection with one encoding and raises on a reply it cannot decode
(a listed name that is not UTF-8 would stop every scan), so the connection is opened as latin-1, which maps each byte
to one character and back unchanged; wire() and device_text() convert between that and filesync's names (UTF-8, with
undecodable bytes surrogate-escaped as os.fsdecode makes them).
"""
import ftplib
import logging
import os
import socket
import ssl
import time
from contextlib import contextmanager
from typing import Dict, Optional, Tuple

from filesync.devices.base import digest_text
from filesync.errors import (AuthRefused, ConfigError, DeviceUnavailable, FilesyncError, PermanentError,
                             TransientError, UnsafePath, Vanished)
from filesync.options import Option, expand_path, port_number, positive, resolve_secret, secret_options

log = logging.getLogger(__name__)

OPTIONS = [
    Option("host", str,
           help="The FTP server's host name or address."),
    Option("port", int, 21, port_number,
           help="The FTP server's control port."),
    Option("user", str, "anonymous",
           help="The FTP user to log in as."),
    Option("root", str, "/",
           help="Folder on the server the paths are under."),
    Option("timeout", float, 30.0, positive,
           help="Seconds to wait for each answer or data block before the server counts as unreachable."),
    Option("passive", bool, True,
           help="true: passive mode (the client opens data connections, works through NAT); false: active mode."),
    Option("tls", bool, False,
           help="true: explicit FTPS (AUTH TLS before the password, PROT P for every data connection); nothing falls "
                "back to clear text."),
    Option("ca_bundle", str, "",
           help="A PEM file of the certificate authorities to trust instead of the system's (tls: true)."),
    Option("verify_tls", bool, True,
           help="false turns off the check of the server's certificate and host name (a loud warning)."),
] + secret_options(what="the FTP user's password")

IDLE_CHECK_SECONDS = 30.0
TRANSIENT_CODES = ("425", "426", "450", "451", "452", "552")
WIRE_ENCODING = "latin-1"

# Digests a server may compute (filesync's name -> the HASH command's name, the older X-command), best first.
DIGEST_COMMANDS = (("sha256", "SHA-256", "XSHA256"), ("md5", "MD5", "XMD5"), ("crc32", "CRC32", "XCRC"))


def unsendable(name: str) -> str:
    """Why `name` cannot be sent in an FTP command, or '' when it can.

    A line break ends the command early (ftplib refuses to send one). The byte 0xFF is the Telnet IAC: ProFTPD reads
    it as the start of a Telnet command unless doubled, vsftpd takes it as it is, so no one form reaches every server.
    """
    if "\r" in name or "\n" in name:
        return "its name holds a line break, which an FTP command cannot carry"
    if "\udcff" in name:
        return "its name holds the byte 0xFF, which FTP servers read differently (a Telnet command to some)"
    return ""


def wire(path: str) -> str:
    """`path` as the latin-1 text that puts its exact bytes on the connection; UnsafePath where it cannot be sent."""
    reason = unsendable(path)
    if reason:
        raise UnsafePath(f"{path!r}: {reason}")
    return path.encode("utf-8", "surrogateescape").decode(WIRE_ENCODING)


def device_text(raw: bytes) -> str:
    """A name as the server sent it, as filesync's str (undecodable bytes surrogate-escaped)."""
    return raw.decode("utf-8", "surrogateescape")


def reply_text(text: str) -> str:
    """A server reply (read as latin-1) as readable text for messages: names in it read as UTF-8 again."""
    return text.encode(WIRE_ENCODING, "replace").decode("utf-8", "replace")


def reply_code(error) -> str:
    """The three-digit code of an ftplib reply error ('' if none)."""
    return str(error).strip()[:3]


def classify(error, what):
    """Our error kind for an exception raised while talking FTP; `what` says what we were doing."""
    if isinstance(error, FilesyncError):
        return error
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    code = text[:3]
    if isinstance(error, (ftplib.error_temp, ftplib.error_perm, ftplib.error_reply)):
        text = reply_text(text)
        if code == "530":
            return AuthRefused(f"{what}: server says {text}")
        if code == "421":
            return DeviceUnavailable(f"{what}: server says {text}")
        if code in TRANSIENT_CODES or isinstance(error, ftplib.error_temp):
            return TransientError(f"{what}: server says {text}")
        return PermanentError(f"{what}: server says {text}")
    if isinstance(error, ssl.SSLCertVerificationError):
        return DeviceUnavailable(f"{what}: TLS: the server's certificate is not accepted: {certificate_problem(error)}")
    if isinstance(error, ssl.SSLError):
        return DeviceUnavailable(f"{what}: TLS: {error.reason or text}")
    if isinstance(error, (OSError, EOFError, ftplib.error_proto)):
        return DeviceUnavailable(f"{what}: {text}")
    return error


def tls_context(options, key) -> Optional[ssl.SSLContext]:
    """The TLS context for a device's `tls`, `ca_bundle` and `verify_tls` options (None without tls); ConfigError for
    a contradiction or a missing bundle. Called once per device, so verify_tls: false warns once."""
    if not options["tls"]:
        for name, default in (("ca_bundle", ""), ("verify_tls", True)):
            if options[name] != default:
                raise ConfigError(f"{key}.{name}: applies only with tls: true (this connection is not encrypted)")
        return None
    if options["ca_bundle"]:
        if not options["verify_tls"]:
            raise ConfigError(f"{key}.verify_tls: false contradicts ca_bundle; give one of them")
        bundle = expand_path(options["ca_bundle"])
        if not os.path.isfile(bundle):
            raise ConfigError(f"{key}.ca_bundle: no such file {bundle}")
        try:
            return ssl.create_default_context(cafile=bundle)
        except ssl.SSLError as error:
            raise ConfigError(f"{key}.ca_bundle: {bundle} holds no usable certificate ({error.reason})") from None
    context = ssl.create_default_context()  # the system's CAs, host name checked
    if not options["verify_tls"]:
        log.warning("%s: verify_tls is false: the FTP server's TLS certificate is NOT checked; anyone on the path can "
                    "read and change the files and the password", key)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def certificate_problem(error: ssl.SSLCertVerificationError) -> str:
    """OpenSSL's reason a certificate was not accepted, as a short phrase ('certificate has expired')."""
    return (error.verify_message or error.reason or str(error)).rstrip(".")


class TypeKeepingFtp(ftplib.FTP):
    """ftplib's FTP that sends TYPE I only when the connection is not already binary: ftplib's retrbinary and
    storbinary send it before every transfer, and a SIZE needs it too (pyftpdlib refuses SIZE in ASCII), which
    cost a round trip before every command. The type is the one last asked for (retrlines asks for A); a TYPE the
    server refuses raises, and the session drops the connection."""

    transfer_type = ""

    def putcmd(self, line):
        if line[:5].upper() == "TYPE ":
            self.transfer_type = line[5:].strip().upper()
        super().putcmd(line)

    def voidcmd(self, cmd):
        if cmd.upper() == "TYPE I" and self.transfer_type == "I":
            return "200 Type is already I"
        return super().voidcmd(cmd)


class SessionReusingFtpTls(TypeKeepingFtp, ftplib.FTP_TLS):
    """ftplib's FTP_TLS whose data connections resume the control connection's TLS session.

    Servers that tie each data connection to the session of its control connection (vsftpd's require_ssl_reuse, on by
    default; ProFTPD unless NoSessionReuseRequired) refuse a data connection that starts a session of its own, so
    that nobody can slip in a connection of theirs. ftplib wraps the data socket without the session (CPython issue
    gh-63699, bpo-19500), so every listing and transfer fails against them; ssl's wrap_socket takes `session`.
    """

    def ntransfercmd(self, cmd, rest=None):
        connection, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            connection = self.context.wrap_socket(connection, server_hostname=self.host, session=self.sock.session)
        return connection, size


def end_data(data) -> None:
    """Close the TLS layer of a data connection whose transfer ended (as ftplib's retrbinary does), so the server
    sees a clean end; a plain socket needs nothing."""
    if isinstance(data, ssl.SSLSocket):
        try:
            data.unwrap()
        except (OSError, ValueError):  # the server closed first: the transfer itself is judged by its reply
            pass


def parse_features(reply: str) -> Dict[str, str]:
    """FEAT's answer as {feature: its parameters}, e.g. {'HASH': 'CRC32;MD5;SHA-1*;SHA-256;', 'SIZE': ''}."""
    features = {}
    for line in reply.splitlines()[1:-1]:
        name, _, parameters = line.strip().partition(" ")
        if name:
            features[name.upper()] = parameters.strip()
    return features


class FtpConnection:
    """One logged-in control connection, made on first use and again after any failure."""

    def __init__(self, options, key, tls=None):
        self.options, self.key = options, key
        self.tls = tls  # an ssl.SSLContext (see tls_context), or None for clear text
        self._ftp = None
        self._last_used = 0.0
        self._features: Optional[Dict[str, str]] = None

    @property
    def address(self):
        """host:port, for messages."""
        return f"{self.options['host']}:{self.options['port']}"

    def _connect(self):
        if self.tls is None:
            ftp = TypeKeepingFtp(timeout=self.options["timeout"], encoding=WIRE_ENCODING)
        else:
            ftp = SessionReusingFtpTls(timeout=self.options["timeout"], encoding=WIRE_ENCODING, context=self.tls)
        try:
            ftp.connect(self.options["host"], self.options["port"])
            if self.tls is not None:
                self._secure(ftp)
            ftp.login(self.options["user"], resolve_secret(self.options, self.key))
            if self.tls is not None:
                self._protect_data(ftp)
            ftp.set_pasv(self.options["passive"])
            ftp.voidcmd("TYPE I")
        except BaseException:
            ftp.close()
            raise
        return ftp

    def _secure(self, ftp):
        """AUTH TLS before anything else is said; a server that refuses it is refused in turn (no clear text)."""
        try:
            ftp.auth()
        except ftplib.error_perm as error:
            raise DeviceUnavailable(f"{self.address} does not offer TLS (AUTH TLS: {reply_text(str(error)).strip()});"
                                    f" {self.key}.tls is true, so nothing is sent in clear text") from None

    def _protect_data(self, ftp):
        """PBSZ 0 and PROT P: data connections encrypted too, or none at all."""
        try:
            ftp.prot_p()
        except ftplib.error_perm as error:
            raise DeviceUnavailable(f"{self.address} refuses encrypted data connections (PROT P: "
                                    f"{reply_text(str(error)).strip()}); {self.key}.tls is true, so no file goes in "
                                    "clear text") from None

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
                self._features = None
            yield self._ftp
            self._last_used = time.monotonic()
        except BaseException as error:
            self.close()
            mapped = classify(error, f"{what} on {self.address}")
            if mapped is error:
                raise
            raise mapped from None

    def features(self, ftp) -> Dict[str, str]:
        """The server's FEAT answer, asked once per connection."""
        if self._features is None:
            try:
                reply = ftp.sendcmd("FEAT")
            except ftplib.error_perm:  # 500/502: a server too old for FEAT has none of the extensions
                reply = ""
            self._features = parse_features(reply)
        return self._features

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
    """SIZE of `path` (a filesync name), or None when the server says it does not exist (550)."""
    # ftplib leaves the connection in ASCII after a listing, and servers refuse SIZE there (pyftpdlib answers 550)
    ftp.voidcmd("TYPE I")
    try:
        return ftp.size(wire(path))
    except ftplib.error_perm as error:
        if reply_code(error) == "550":
            return None
        raise


def listing_lines(ftp, command):
    """The raw lines of a LIST or MLSD answer, split only at CRLF.

    Read in binary (ftplib's retrlines splits at a bare LF too, so a name holding a newline would come apart into a
    phantom name and a stray line); the servers end each entry with CRLF.
    """
    chunks = []
    ftp.retrbinary(command, chunks.append)
    return [line for line in b"".join(chunks).split(b"\r\n") if line]


def offered_digests(features) -> Tuple[str, ...]:
    """The digests (filesync's names, best first) the server computes by HASH or by its X-commands."""
    hash_names = {name.rstrip("*").upper() for name in features.get("HASH", "").split(";") if name}
    return tuple(ours for ours, hash_name, command in DIGEST_COMMANDS
                 if hash_name in hash_names or command in features)


def server_digest(ftp, features, path, algorithm) -> str:
    """The server's `algorithm` digest of `path` (a filesync name) in filesync's text form.

    HASH (draft-bryan-ftpext-hash) where the server offers it for this algorithm, else the X-command; Vanished for a
    file that is not there.
    """
    entry = next((e for e in DIGEST_COMMANDS if e[0] == algorithm), None)
    if entry is None or algorithm not in offered_digests(features):
        raise PermanentError(f"the server computes no {algorithm}")
    _, hash_name, command = entry
    hash_names = {name.rstrip("*").upper() for name in features.get("HASH", "").split(";") if name}
    try:
        if hash_name in hash_names:
            ftp.sendcmd(f"OPTS HASH {hash_name}")
            # 213 <algorithm> <start>-<end> <hex> <path>
            value = ftp.sendcmd(f"HASH {wire(path)}").splitlines()[-1].split(" ", 4)[3]
        else:
            # 250 <HEX>; the X-commands take optional start and end after the path, so a path with a space is quoted
            argument = wire(path)
            if " " in argument:
                if '"' in argument:
                    raise PermanentError(f"{path!r} holds a space and a quote: {command} cannot name it")
                argument = f'"{argument}"'
            value = ftp.sendcmd(f"{command} {argument}").splitlines()[-1].split(" ")[1]
    except ftplib.error_perm as error:
        if reply_code(error) == "550":
            raise Vanished(f"{path} is not there: {reply_text(str(error))}") from None
        raise
    return digest_text(int(value, 16)) if algorithm == "crc32" else digest_text(value)
