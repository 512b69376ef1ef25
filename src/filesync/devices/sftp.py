"""An SSH server as a target and as a source, over SFTP (OpenSSH's sftp-server, or any SFTP v3 server).

Library: paramiko (PyPI, pinned in requirements.txt), not asyncssh and not Debian's python3-paramiko. Side by side on
loopback against OpenSSH 9.2 (200 MiB, a loaded 2-core machine, so noisy): paramiko 5.1 with pipelined writes
115-160 MB/s, asyncssh 2.24 124-169 MB/s, OpenSSH's `sftp` 148-212 MB/s, Debian's paramiko 2.12 only 30 MB/s (3.9
CPU s per 200 MiB against 0.5). asyncssh is no faster, and paramiko is synchronous like the device interface (no
event loop thread to run); its dependencies (cryptography, bcrypt, PyNaCl, invoke) are satisfied by Debian's
packages, so pip adds paramiko alone.

Target: the upload lands under paths.part_name, resumed from the size the server holds (held() is the server's stat,
never what was sent), written with pipelined requests (memory stays at the SSH window whatever the file size). The
last write is followed by fsync@openssh.com on the same handle (publish() sends it on the .part where no write of
this process did), then publish() renames: without `replace` by the plain SFTP rename
(SSH_FXP_RENAME), which OpenSSH refuses when the new name exists (it links, then unlinks): that refusal is
FinalNameTaken; with `replace` by posix-rename@openssh.com, which replaces. Verification: with `remote_sha256: true`
the server's `sha256sum` run over an exec channel (digests ('sha256',)), else the size and read-back (readable).

Source: a recursive listing (include/exclude globs), reads that resume from an offset with a bounded number of
requests in flight, the server's sha256sum with `remote_sha256`, delete.

Host keys are checked before any credential is sent: against `known_hosts` (OpenSSH's format, hashed names too) or a
pinned `host_key_fingerprint` (SHA256:... as `ssh-keygen -l` prints it). An unknown or changed key is refused with one
line naming the host and both fingerprints (AuthRefused: the worker waits, no file is at fault).

Names travel as bytes: paramiko decodes listed names strictly as UTF-8 (a name that is not would stop every scan) and
encodes str paths strictly, so paths go to it as bytes (filesync's str with undecodable bytes surrogate-escaped,
encoded back exactly) and directories are read with a byte-level READDIR (paramiko's own internals, see _read_dir).

Errors:
  connection refused, timeout, dropped connection, SSH negotiation failure -> DeviceUnavailable
  host key unknown or changed, credentials refused, key file unusable       -> AuthRefused (never names a secret)
  no such file                                                              -> Vanished (stat: None; delete: done)
  permission denied                                                         -> PermanentError
  any other refusal (SSH_FX_FAILURE: a full disk cannot be told apart)      -> TransientError with the server's text
"""
import errno
import fnmatch
import logging
import os
import posixpath
import re
import shlex
import socket
import stat
import time
from contextlib import contextmanager
from typing import Dict, Optional, Tuple
from urllib.parse import quote

import paramiko
from paramiko.sftp import CMD_CLOSE, CMD_EXTENDED, CMD_EXTENDED_REPLY, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR
from paramiko.sftp_attr import SFTPAttributes

from filesync.devices.base import (Checksum, PerThread, RemoteFile, Source, Target, check_as_listed, filter_options,
                                   send_blocks)
from filesync.errors import (AuthRefused, ConfigError, DeviceUnavailable, FilesyncError, FinalNameTaken,
                             PermanentError, StartOver, TransientError, Vanished)
from filesync.options import Option, expand_path, port_number, positive, resolve_secret, secret_options

log = logging.getLogger(__name__)

# SFTP read and write requests: as large as the server says it takes (limits@openssh.com, OpenSSH 8.7 and later:
# 255 KiB), at most MAX_REQUEST; 32 KiB (what every server must take, paramiko's default) where it does not say.
# 200 MiB to OpenSSH 9.2 on loopback, CPU seconds of a fresh process: 32 KiB requests 0.8 (a 32 KiB write with its
# header does not fit one 32 KiB SSH packet, and every request has an answer to read), 64 KiB 0.75, 120 KiB 0.53,
# 255 KiB 0.8 again: blocks over glibc's 128 KiB mmap threshold are mapped and unmapped for every request.
MAX_REQUEST = 120 * 1024
DEFAULT_REQUEST = 32 * 1024
# Reads: READ_WINDOW bytes asked at once (memory stays at one window whatever the file size).
READ_WINDOW = 4 * 1024 * 1024
IDLE_CHECK_SECONDS = 30.0
FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
SHA256_LINE = re.compile(rb"^\\?([0-9a-f]{64}) ")
UNSUPPORTED = "unsupported"  # OpenSSH's text for SSH_FX_OP_UNSUPPORTED: "Operation unsupported"


def _check_fingerprint(value):
    return None if not value or FINGERPRINT.match(value) else \
        "expected SHA256:<43 base64 characters>, as `ssh-keygen -l -f <host key>.pub` prints it"


OPTIONS = [
    Option("host", str,
           help="The SSH server's host name or address."),
    Option("port", int, 22, port_number,
           help="The SSH server's TCP port."),
    Option("user", str,
           help="The SSH user to log in as."),
    Option("root", str, ".",
           help="Folder on the server the paths are under; relative paths are under the user's home."),
    Option("timeout", float, 30.0, positive,
           help="Seconds to wait for the connection and for each answer before the server counts as unreachable."),
    Option("known_hosts", str, "",
           help="A file in OpenSSH's known_hosts format holding the server's host key; give this or "
                "host_key_fingerprint."),
    Option("host_key_fingerprint", str, "", _check_fingerprint,
           help="The server's host key pinned as SHA256:... (as ssh-keygen -l -f <key>.pub prints it); give this or "
                "known_hosts."),
    Option("key_file", str, "",
           help="A private key file to log in with (with key_passphrase_env or key_passphrase_file if it is "
                "encrypted); or give a password."),
    Option("remote_sha256", bool, False,
           help="true: verify copies (and read sources' checksums) with the server's sha256sum over an exec channel; "
                "false where the server cannot run commands (then size and read-back)."),
    Option("digest_timeout", float, 600.0, positive,
           help="Seconds to wait for the server's sha256sum of one file (a large file on a slow server takes a "
                "while)."),
] + secret_options(what="the SSH user's password (or give key_file)") + \
    secret_options("key_passphrase", "the passphrase of an encrypted key_file")


def wire(path: str) -> bytes:
    """A filesync path as the exact bytes the server names it by."""
    return path.encode("utf-8", "surrogateescape")


def device_text(raw: bytes) -> str:
    """A name as the server sent it, as filesync's str (undecodable bytes surrogate-escaped)."""
    return raw.decode("utf-8", "surrogateescape")


def check_options(options, key):
    """ConfigError at start for a configuration that cannot connect safely or at all."""
    if bool(options["known_hosts"]) == bool(options["host_key_fingerprint"]):
        raise ConfigError(f"{key}: give known_hosts (a file) or host_key_fingerprint (SHA256:...), exactly one: the "
                          "server's host key is checked before anything is sent, and an unknown host is refused")
    if options["known_hosts"] and not os.path.isfile(expand_path(options["known_hosts"])):
        raise ConfigError(f"{key}.known_hosts: no such file: {expand_path(options['known_hosts'])}")
    has_password = any(options[name] for name in ("password", "password_env", "password_file"))
    if not options["key_file"] and not has_password:
        raise ConfigError(f"{key}: give key_file or password (password_env, password_file)")


def _first_line(error) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


GCM_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")

class SftpConnection:
    """One SSH connection with one SFTP channel, made on first use and again after a failure."""

    def __init__(self, options, key):
        self.options, self.key = options, key
        self.transport: Optional[paramiko.Transport] = None
        self.sftp: Optional[paramiko.SFTPClient] = None
        self._last_used = 0.0
        self.write_size = self.read_size = DEFAULT_REQUEST

    @property
    def address(self):
        """host:port, for messages."""
        return f"{self.options['host']}:{self.options['port']}"

    # Connecting

    def _known_name(self):
        host, port = self.options["host"], self.options["port"]
        return host if port == 22 else f"[{host}]:{port}"

    def _expected_keys(self) -> Dict[str, paramiko.PKey]:
        """The host keys known_hosts names for this server, by type ({} for none)."""
        path = expand_path(self.options["known_hosts"])
        try:
            known = paramiko.HostKeys(path)
        except (OSError, paramiko.SSHException) as error:
            raise AuthRefused(f"known_hosts {path} cannot be read ({_first_line(error)}): not connecting to "
                              f"{self.address}") from None
        entry = known.lookup(self._known_name())
        return dict(entry) if entry else {}

    def _check_host_key(self, offered: paramiko.PKey):
        """Refuse (AuthRefused, one line) a host key that is not the one known or pinned."""
        now = f"{offered.get_name()} {offered.fingerprint}"
        if self.options["host_key_fingerprint"]:
            if offered.fingerprint != self.options["host_key_fingerprint"]:
                raise AuthRefused(f"host key of {self.address} changed (was {self.options['host_key_fingerprint']} "
                                  f"as pinned by host_key_fingerprint, now {now}): refusing to connect")
            return
        expected = self._expected_keys()
        if not expected:
            raise AuthRefused(f"host key of {self.address} ({now}) is not in known_hosts "
                              f"{expand_path(self.options['known_hosts'])}: refusing to connect to an unknown host "
                              "(check the fingerprint, then add the key: ssh-keyscan)")
        same_type = expected.get(offered.get_name())
        if same_type is None or same_type.asbytes() != offered.asbytes():
            was = ", ".join(f"{key.get_name()} {key.fingerprint}" for key in expected.values())
            raise AuthRefused(f"host key of {self.address} changed (was {was}, now {now}): refusing to connect")

    def _private_key(self):
        path = expand_path(self.options["key_file"])
        passphrase = resolve_secret(self.options, self.key, "key_passphrase").encode("utf-8") or None
        try:
            return paramiko.PKey.from_path(path, passphrase)
        except OSError as error:
            raise AuthRefused(f"{self.key}.key_file {path} cannot be read: {error.strerror}") from None
        except Exception:  # noqa: BLE001 - paramiko and cryptography raise many kinds for a key they cannot open
            if passphrase is None:  # an encrypted ed25519 key without a passphrase fails deep in cryptography
                raise AuthRefused(f"{self.key}.key_file {path} is encrypted or not a private key: give "
                                  "key_passphrase (key_passphrase_env, key_passphrase_file) if it is encrypted") \
                    from None
            raise AuthRefused(f"{self.key}.key_file {path} cannot be opened: a wrong key_passphrase, or not a "
                              "private key") from None

    def _connect(self):
        timeout = self.options["timeout"]
        try:
            sock = socket.create_connection((self.options["host"], self.options["port"]), timeout=timeout)
        except OSError as error:
            raise DeviceUnavailable(f"cannot reach {self.address}: {error.strerror or _first_line(error)}") from None
        transport = paramiko.Transport(sock)
        try:
            transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = timeout
            security = transport.get_security_options()
            # AES-GCM first, as OpenSSH prefers it: one pass (with AES-NI) where paramiko's default AES-CTR plus an
            # HMAC costs two; the CPU is what limits paramiko on a fast link (and on a Raspberry Pi)
            security.ciphers = [c for c in GCM_CIPHERS if c in security.ciphers] + \
                [c for c in security.ciphers if c not in GCM_CIPHERS]
            if self.options["known_hosts"]:  # ask for the key type known_hosts holds, as OpenSSH does
                known = list(self._expected_keys())
                security.key_types = [k for k in known if k in security.key_types] + \
                    [k for k in security.key_types if k not in known]
            try:
                transport.start_client(timeout=timeout)
            except (paramiko.SSHException, EOFError, OSError) as error:
                raise DeviceUnavailable(f"SSH with {self.address} failed: {_first_line(error)}") from None
            self._check_host_key(transport.get_remote_server_key())
            self._authenticate(transport)
            sftp = paramiko.SFTPClient.from_transport(transport)
            sftp.get_channel().settimeout(timeout)
            self.read_size, self.write_size = self._request_sizes(sftp)
        except BaseException:
            transport.close()
            raise
        return transport, sftp

    @staticmethod
    def _request_sizes(sftp) -> Tuple[int, int]:
        """(read, write) request sizes from the server's limits@openssh.com answer, else DEFAULT_REQUEST."""
        try:
            kind, message = sftp._request(CMD_EXTENDED, "limits@openssh.com")  # no public call for it in paramiko
        except OSError:  # SSH_FX_OP_UNSUPPORTED: a server that does not say
            return DEFAULT_REQUEST, DEFAULT_REQUEST
        if kind != CMD_EXTENDED_REPLY:
            return DEFAULT_REQUEST, DEFAULT_REQUEST
        message.get_int64()  # max packet length
        read, write = message.get_int64(), message.get_int64()
        return tuple(min(size, MAX_REQUEST) if size >= DEFAULT_REQUEST else DEFAULT_REQUEST for size in (read, write))

    def open(self, sftp, path: bytes, mode):
        """sftp.open with this server's request sizes; writes unbuffered: write() gets one request's bytes at a
        time (paramiko's buffer would only copy them)."""
        handle = sftp.open(path, mode, bufsize=-1 if mode == "rb" else 0)
        handle.MAX_REQUEST_SIZE = self.read_size if mode == "rb" else self.write_size
        return handle

    def _authenticate(self, transport):
        """The key first, then the password (as ssh does); AuthRefused naming what was tried, never a secret."""
        user = self.options["user"]
        tried = []
        try:
            if self.options["key_file"]:
                tried.append(f"key {expand_path(self.options['key_file'])}")
                try:
                    transport.auth_publickey(user, self._private_key())
                    return
                except paramiko.AuthenticationException:
                    pass
            if any(self.options[name] for name in ("password", "password_env", "password_file")):
                tried.append("password")
                try:
                    transport.auth_password(user, resolve_secret(self.options, self.key))
                    return
                except paramiko.AuthenticationException:
                    pass
        except (paramiko.SSHException, EOFError, OSError) as error:
            raise DeviceUnavailable(f"SSH with {self.address} failed: {_first_line(error)}") from None
        raise AuthRefused(f"{self.address} refused user {user!r} ({' and '.join(tried)})")

    # Using it

    @contextmanager
    def session(self, what):
        """Yield a connected paramiko SFTPClient; on a failure raise our error kind for `what` (dropping the
        connection when it is the connection that failed)."""
        try:
            if self.sftp is not None and (not self.transport.is_active() or
                                          time.monotonic() - self._last_used > IDLE_CHECK_SECONDS):
                try:
                    self.sftp.stat(b".")
                except (OSError, EOFError, paramiko.SSHException):
                    self.close()
            if self.sftp is None:
                self.transport, self.sftp = self._connect()
            yield self.sftp
            self._last_used = time.monotonic()
        except FilesyncError:
            raise
        except Exception as error:  # not GeneratorExit: a reader closed early is no failure
            mapped = self.classify(error, f"{what} on {self.address}")
            if mapped is None:
                raise
            if isinstance(mapped, DeviceUnavailable):
                self.close()
            raise mapped from None

    def classify(self, error, what):
        """Our error kind for an exception met while talking SFTP (None: not ours to map)."""
        text = _first_line(error)
        if not isinstance(error, (OSError, EOFError, paramiko.SSHException)):
            return None
        if isinstance(error, (socket.timeout, TimeoutError)):
            return DeviceUnavailable(f"{what}: timed out")
        if self.transport is None or not self.transport.is_active() or \
                isinstance(error, (EOFError, paramiko.SSHException)):
            return DeviceUnavailable(f"{what}: connection lost ({text})")
        if error.errno == errno.ENOENT:
            return Vanished(f"{what}: no such file")
        if error.errno == errno.EACCES:
            return PermanentError(f"{what}: permission denied")
        if error.errno is None:  # an SFTP status (SSH_FX_FAILURE...): the server's own words
            return TransientError(f"{what}: server says {error.strerror or text}")
        return DeviceUnavailable(f"{what}: {error.strerror or text}")

    def extended(self, sftp, name, *arguments):
        """Send the SFTP extension request `name`; False where the server does not support it."""
        try:
            sftp._request(CMD_EXTENDED, name, *arguments)  # paramiko has no public call for other extensions
        except OSError as error:
            if error.errno is None and UNSUPPORTED in str(error).lower():
                return False
            raise
        return True

    def remote_sha256(self, path: bytes, what) -> str:
        """`sha256sum -- <path>` on the server over an exec channel (the path quoted for sh): the hex digest."""
        command = b"sha256sum -- " + shlex.quote(device_text(path)).encode("utf-8", "surrogateescape")
        with self.session(what):
            channel = self.transport.open_session(timeout=self.options["timeout"])
        try:
            channel.settimeout(self.options["digest_timeout"])
            channel.exec_command(command)
            out, err = channel.makefile("rb").read(), channel.makefile_stderr("rb").read()
            status = channel.recv_exit_status()
        except (socket.timeout, TimeoutError):
            raise TransientError(f"{what}: sha256sum gave no answer within {self.options['digest_timeout']:.0f} s") \
                from None
        except (OSError, EOFError, paramiko.SSHException) as error:
            self.close()
            raise DeviceUnavailable(f"{what}: connection lost ({_first_line(error)})") from None
        finally:
            channel.close()
        match = SHA256_LINE.match(out)
        if status == 0 and match:
            return match.group(1).decode("ascii")
        problem = device_text(err.strip().splitlines()[-1] if err.strip() else out[:200]).strip()
        if b"No such file" in err:
            raise Vanished(f"{what}: no such file")
        raise PermanentError(f"{what}: the server's sha256sum failed (exit {status}: {problem or 'no output'}); "
                             "set remote_sha256: false where it cannot run commands")

    def close(self):
        """Drop the connection."""
        if self.transport is not None:
            try:
                self.transport.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail in many ways; it is gone anyway
                pass
        self.transport = self.sftp = None


def _size_or_none(sftp, path: bytes) -> Optional[int]:
    """The size of a regular file, None when there is nothing under that name."""
    try:
        attributes = sftp.stat(path)
    except OSError as error:
        if error.errno == errno.ENOENT:
            return None
        raise
    if not stat.S_ISREG(attributes.st_mode or 0):
        raise PermanentError(f"{device_text(path)} is not a regular file")
    return attributes.st_size


def _read_dir(sftp, path: bytes):
    """(name bytes, SFTPAttributes) of each entry, '.' and '..' left out.

    Written with paramiko's request layer because its listdir_attr decodes names strictly as UTF-8 and raises on one
    that is not; here names stay bytes.
    """
    kind, message = sftp._request(CMD_OPENDIR, path)
    if kind != CMD_HANDLE:
        raise paramiko.SFTPError("expected a handle")
    handle = message.get_binary()
    try:
        while True:
            try:
                kind, message = sftp._request(CMD_READDIR, handle)
            except EOFError:
                return
            if kind != CMD_NAME:
                raise paramiko.SFTPError("expected names")
            for _ in range(message.get_int()):
                name = message.get_string()
                message.get_string()  # the long name, as `ls -l` would show it
                attributes = SFTPAttributes._from_msg(message)
                if name not in (b".", b".."):
                    yield name, attributes
    finally:
        sftp._request(CMD_CLOSE, handle)


def _read_range(connection, sftp, path: bytes, offset: int, end: int):
    """Yield the bytes of `path` from `offset` to `end`, asking READ_WINDOW bytes at a time (paramiko's readv sends
    the requests of one window at once and takes the answers as they come), so memory stays at one window; a file
    that ends early yields less."""
    with connection.open(sftp, path, "rb") as handle:
        position = offset
        while position < end:
            window_end = min(end, position + READ_WINDOW)
            chunks = [(at, min(handle.MAX_REQUEST_SIZE, window_end - at))
                      for at in range(position, window_end, handle.MAX_REQUEST_SIZE)]
            for (at, length), block in zip(chunks, handle.readv(chunks)):
                if block:
                    yield block
                if len(block) < length:
                    return
                position = at + length


class SftpTarget(Target):
    """Uploads into `root` on an SSH server over SFTP, keeping the engine's relative path; folders made as needed."""

    kind = "sftp"
    OPTIONS = OPTIONS
    readable = True
    can_delete = True

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        check_options(self.options, key)
        self.digests = ("sha256",) if self.options["remote_sha256"] else ()
        self.connections = PerThread(lambda: SftpConnection(self.options, key))
        self._made_directories = set()
        self._synced = set()  # temporary names whose upload write() synced on the server

    def _remote(self, path) -> bytes:
        return wire(posixpath.join(self.options["root"], path))

    def probe(self):
        with self.connections.get().session("probe") as sftp:
            sftp.stat(b".")

    def stat(self, path):
        """The size of the final name, None where there is none."""
        final = self._remote(path)
        with self.connections.get().session(f"stat {device_text(final)}") as sftp:
            return _size_or_none(sftp, final)

    def digest(self, path, algorithm):
        """The server's sha256sum of the final name (only with remote_sha256)."""
        if algorithm not in self.digests:
            return super().digest(path, algorithm)
        final = self._remote(path)
        return self.connections.get().remote_sha256(final, f"sha256sum of {device_text(final)}")

    def read(self, path):
        """Stream the final name's bytes; Vanished when there is no such file."""
        final = self._remote(path)
        connection = self.connections.get()
        with connection.session(f"reading {device_text(final)}") as sftp:
            size = _size_or_none(sftp, final)
            if size is None:
                raise Vanished(f"{device_text(final)} is not on {connection.address}")
            yield from _read_range(connection, sftp, final, 0, size)

    def held(self, path, note=""):
        """The size the server holds of the upload's temporary name (0 when none)."""
        part = self._remote(self.part_name(path))
        with self.connections.get().session(f"stat {device_text(part)}") as sftp:
            return _size_or_none(sftp, part) or 0

    def discard(self, path):
        """Remove the upload's temporary name; one that is not there counts as discarded."""
        part = self._remote(self.part_name(path))
        with self.connections.get().session(f"removing {device_text(part)}") as sftp:
            _remove(sftp, part)

    def _make_directories(self, sftp, directory: bytes):
        """Make the missing folders of `directory`, from the nearest one that exists (both remembered until close)."""
        missing = []
        while directory not in (b"", b"/", b".") and directory not in self._made_directories:
            try:
                if not stat.S_ISDIR(sftp.stat(directory).st_mode or 0):
                    raise PermanentError(f"{device_text(directory)} is a file, not a folder")
                self._made_directories.add(directory)  # there: not asked again for the next file
                break
            except OSError as error:
                if error.errno != errno.ENOENT:
                    raise
            missing.append(directory)
            directory = posixpath.dirname(directory)
        for directory in reversed(missing):
            try:
                sftp.mkdir(directory)
            except OSError:  # made meanwhile by another upload? OpenSSH answers a plain failure for one that exists
                if not stat.S_ISDIR(sftp.stat(directory).st_mode or 0):
                    raise
        self._made_directories.update(missing)

    def write(self, path, stream, offset, size, progress):
        """Write the stream to the temporary name from `offset` (the size the server holds: the file is cut there
        first), with pipelined requests. StartOver where the temporary name is gone."""
        part = self._remote(self.part_name(path))
        what = f"writing {device_text(part)}"
        connection = self.connections.get()
        try:
            with connection.session(what) as sftp:
                self._make_directories(sftp, posixpath.dirname(part))
                if offset:
                    try:
                        handle = connection.open(sftp, part, "r+b")
                    except OSError as error:
                        if error.errno != errno.ENOENT:
                            raise
                        raise StartOver(f"{what}: the partial upload is gone; sending from byte 0") from None
                    handle.truncate(offset)
                    handle.seek(offset)
                else:
                    handle = connection.open(sftp, part, "wb")
                sent = self._send(handle, stream, offset, progress, connection.write_size,
                                  lambda: self._fsync(connection, sftp, handle, part))
        except BaseException:
            self._made_directories.clear()  # a folder may have gone with the server's state
            raise
        if sent != size:
            raise TransientError(f"sent {sent} of {size} bytes of {path}: the staged copy changed")

    @staticmethod
    def _send(handle, stream, offset, progress, block_size, sync) -> int:
        """Pipelined writes of the stream, one request per block; paramiko collects the answers as they come and
        the rest at close (the SSH window bounds what is in flight, so memory stays flat), so an error on our side
        (the staged file, or progress() stopping the upload) still lets the bytes already sent land first. A
        stream sent to its end is synced (`sync`) on the same handle before it closes."""
        with handle:
            handle.set_pipelined(True)
            sent, stopped = send_blocks(stream, handle.write, offset, block_size, progress)
            if stopped is None:
                sync()
        if stopped is not None:
            raise stopped
        return sent

    def _fsync(self, connection, sftp, handle, part: bytes):
        """fsync@openssh.com on an open handle of the temporary name `part` (the server processes it after the
        writes before it), remembered so that publish() need not open the file again to sync it."""
        if not connection.extended(sftp, "fsync@openssh.com", handle.handle):
            log.debug("%s: the server has no fsync@openssh.com", self.name)
        self._synced.add(part)

    def publish(self, path, size, replace=False):
        """fsync@openssh.com on the finished upload, then rename it to its final name: the plain rename (which
        OpenSSH refuses onto an existing name: FinalNameTaken) unless `replace`, then posix-rename@openssh.com."""
        final, part = self._remote(path), self._remote(self.part_name(path))
        connection = self.connections.get()
        with connection.session(f"publishing {device_text(final)}") as sftp:
            held = _size_or_none(sftp, part)
            if held != size:
                raise TransientError(f"{device_text(part)} holds {held} bytes after the upload, expected {size}")
            if part in self._synced:  # synced as write() ended, in this process
                self._synced.discard(part)
            else:  # sent before a restart, or by a write() that stopped
                with sftp.open(part, "rb") as handle:
                    self._fsync(connection, sftp, handle, part)
                self._synced.discard(part)
            if replace:
                if not connection.extended(sftp, "posix-rename@openssh.com", part, final):
                    _remove(sftp, final)  # no posix-rename: the plain rename cannot replace
                    sftp.rename(part, final)
            else:
                if _size_or_none(sftp, final) is not None:
                    raise FinalNameTaken(f"{self.location(path)} already holds a file")
                try:
                    sftp.rename(part, final)
                except OSError as error:
                    if error.errno is None and _size_or_none(sftp, final) is not None:
                        raise FinalNameTaken(f"{self.location(path)} already holds a file") from None
                    raise
        return self.location(path)  # the engine checks the final name next (its size, and its bytes)

    def location(self, path):
        """sftp://user@host:port/<root>/<path> (a root under the home as /~/...), quoted as a URL."""
        remote = posixpath.join(self.options["root"], path)
        remote = remote if remote.startswith("/") else "/~/" + posixpath.normpath(remote)
        return f"sftp://{quote(self.options['user'])}@{self.options['host']}:{self.options['port']}{quote(remote)}"

    def delete(self, path):
        """Remove the final name; one that is already gone counts as deleted."""
        final = self._remote(path)
        with self.connections.get().session(f"removing {device_text(final)}") as sftp:
            _remove(sftp, final)

    def close(self):
        self.connections.close()
        self._made_directories.clear()
        self._synced.clear()  # bounded: a .part synced but never published is synced again if it ever is


def _remove(sftp, path: bytes):
    """Remove a file; one that is not there counts as removed."""
    try:
        sftp.remove(path)
    except OSError as error:
        if error.errno != errno.ENOENT:
            raise


class SftpSource(Source):
    """Files under `root` on an SSH server, with include/exclude globs matched against the path or the bare name."""

    kind = "sftp"
    can_delete = True
    OPTIONS = OPTIONS + filter_options()

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        check_options(self.options, key)
        self.checksum_algorithm = "sha256" if self.options["remote_sha256"] else None
        self.connections = PerThread(lambda: SftpConnection(self.options, key))
        self._listed: Dict[str, Tuple[int, float]] = {}  # path -> (size, mtime) at the last listing

    def _remote(self, path) -> bytes:
        return wire(posixpath.join(self.options["root"], path))

    def _wanted(self, relative) -> bool:
        name = relative.rsplit("/", 1)[-1]

        def hit(patterns):
            return any(fnmatch.fnmatchcase(relative, p) or fnmatch.fnmatchcase(name, p) for p in patterns)
        return hit(self.options["include"]) and not hit(self.options["exclude"])

    def _walk(self, sftp, directory: bytes, relative: str):
        for raw, attributes in _read_dir(sftp, directory):
            name = device_text(raw)
            child = f"{relative}/{name}" if relative else name
            mode = attributes.st_mode or 0
            if stat.S_ISDIR(mode):
                try:
                    yield from self._walk(sftp, posixpath.join(directory, raw), child)
                except OSError as error:  # this folder only (permission denied, removed meanwhile)
                    if error.errno not in (errno.EACCES, errno.ENOENT):
                        raise
                    yield RemoteFile(child, 0, 0.0, problem=f"its files cannot be listed: {_first_line(error)}")
            elif stat.S_ISREG(mode) and self._wanted(child):
                yield RemoteFile(child, attributes.st_size, float(attributes.st_mtime or 0))

    def list(self):
        """Every wanted file under root, recursively (names exactly as the server has them)."""
        root = wire(self.options["root"])
        connection = self.connections.get()
        try:
            with connection.session(f"listing {self.options['root']}") as sftp:
                found = list(self._walk(sftp, root, ""))
        except Vanished:  # the root itself: like a drive not mounted, every file waits for it
            raise DeviceUnavailable(f"{self.options['root']} is not on {connection.address}") from None
        self._listed = {entry.path: (entry.size, entry.mtime) for entry in found}
        return found

    def probe(self):
        with self.connections.get().session("probe") as sftp:
            sftp.stat(b".")

    def _facts(self, sftp, remote: bytes) -> Optional[Tuple[int, float]]:
        try:
            attributes = sftp.stat(remote)
        except OSError as error:
            if error.errno == errno.ENOENT:
                return None
            raise
        if not stat.S_ISREG(attributes.st_mode or 0):
            return None
        return attributes.st_size, float(attributes.st_mtime or 0)

    def stat(self, path) -> RemoteFile:
        with self.connections.get().session(f"stat {path}") as sftp:
            facts = self._facts(sftp, self._remote(path))
        if facts is None:
            raise Vanished(f"{path} is no longer on {self.options['host']}")
        return RemoteFile(path, *facts)

    def read(self, path, offset):
        """Yield the bytes of `path` from `offset`, then check the file stayed as it was during the copy."""
        remote = self._remote(path)
        connection = self.connections.get()
        with connection.session(f"reading {path}") as sftp:
            before = self._facts(sftp, remote)
            if before is None:
                raise Vanished(f"{path} is no longer on {connection.address}")
            size = before[0]
            check_as_listed(path, self._listed.get(path), before, offset)
            received = offset
            for block in _read_range(connection, sftp, remote, offset, size):
                received += len(block)
                yield block
            after = self._facts(sftp, remote)
            if after != before or received != size:
                now = f"{after[0]} bytes" if after else "gone"
                raise TransientError(f"{path} changed during the copy ({size} bytes, got {received}, now {now}): "
                                     "not finished yet")

    def checksum(self, path) -> Optional[Checksum]:
        """The server's sha256sum of the file (with remote_sha256), None otherwise."""
        if not self.checksum_algorithm:
            return None
        remote = self._remote(path)
        return Checksum("sha256", self.connections.get().remote_sha256(remote, f"sha256sum of {path}"))

    def delete(self, path):
        """Remove the file; one that is already gone counts as deleted."""
        with self.connections.get().session(f"removing {path}") as sftp:
            _remove(sftp, self._remote(path))

    def close(self):
        self.connections.close()
