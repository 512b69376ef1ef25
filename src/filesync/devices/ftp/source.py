"""An FTP server as a source: a recursive listing (MLSD where the server offers it, LIST otherwise), downloads that
resume with REST from the checkpoint, and a check that the file did not change while it was copied.

A file counts as not finished (TransientError: retried later, its copied bytes kept) when its size or modification
time differs from what the listing said, changes during the copy, or more bytes arrive than it had when the copy
began. A server that cannot be reached is DeviceUnavailable (see filesync.devices.ftp.connection).

Names are listed as the server sends them (bytes that are not UTF-8 surrogate-escaped). One entry never stops a
scan: a name the server cannot serve (see connection.unsendable; a name the server lists but cannot find, as
pyftpdlib lists undecodable bytes as '?') is listed with RemoteFile.problem set.
"""
import calendar
import fnmatch
import ftplib
import logging
import posixpath
import re
import time
from typing import Dict, Optional, Tuple

from filesync.devices.base import Checksum, PerThread, RemoteFile, Source, check_as_listed, filter_options
from filesync.devices.ftp.connection import (OPTIONS, WIRE_ENCODING, FtpConnection, device_text, end_data,
                                             listing_lines, offered_digests, parse_features, reply_code, reply_text,
                                             server_digest, tls_context, unsendable, wire)
from filesync.errors import TransientError, Vanished

log = logging.getLogger(__name__)

BLOCK = 256 * 1024
# A Unix `ls -l` line, the LIST format of vsftpd, ProFTPD, pure-ftpd and pyftpdlib.
LIST_LINE = re.compile(r"^(?P<type>[-dlbcps])\S{9}\S*\s+\d+\s+\S+\s+\S+\s+(?P<size>\d+)\s+"
                       r"\w{3}\s+\d{1,2}\s+(?:\d{1,2}:\d{2}|\d{4})\s(?P<name>.+)$", re.DOTALL)
# What a server puts in a listed name for a character it cannot send (pyftpdlib: '?'): such a name is checked with
# one MLST or SIZE, so a name the server cannot find again is listed with its problem instead of failing every copy.
PHANTOM_MARKS = frozenset("?\ufffd")


def parse_ftp_time(text) -> Optional[float]:
    """Seconds since the epoch from an MDTM reply or an MLSD 'modify' fact (YYYYMMDDHHMMSS[.sss], UTC; RFC 3659)."""
    match = re.match(r"^(\d{14})(\.\d+)?$", text.strip())
    if not match:
        return None
    seconds = calendar.timegm(time.strptime(match.group(1), "%Y%m%d%H%M%S"))
    return seconds + (float(match.group(2)) if match.group(2) else 0.0)


def parse_facts(text) -> Dict[str, str]:
    """MLSD/MLST facts ('type=file;size=5;modify=20240102030405;') as a dict with lowercase names (RFC 3659)."""
    facts = {}
    for part in text.split(";"):
        name, equals, value = part.partition("=")
        if equals:
            facts[name.strip().lower()] = value
    return facts


class FtpSource(Source):
    """Files under `root` on an FTP server, with include/exclude globs matched against the path or the bare name."""

    kind = "ftp"
    can_delete = True
    checksum_algorithm = "sha256"  # where the server offers HASH SHA-256 or XSHA256 (ProFTPD's mod_digest)
    OPTIONS = OPTIONS + filter_options()

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        self._tls = tls_context(self.options, key)
        self._connections = PerThread(lambda: FtpConnection(self.options, self.key, self._tls))
        self._features: Optional[dict] = None  # FEAT answer, learnt once per server
        self._listed: Dict[str, Tuple[int, float]] = {}  # path -> (size, mtime) at the last listing

    # Connections

    def _connection(self) -> FtpConnection:
        return self._connections.get()

    def close(self):
        """Close this thread's connection and those of threads that have ended (never one in use elsewhere)."""
        self._connections.close()

    def _has(self, ftp, feature) -> bool:
        if self._features is None:
            try:
                reply = ftp.sendcmd("FEAT")
            except ftplib.error_perm:  # 500/502: a server too old for FEAT has none of the extensions
                reply = ""
            self._features = parse_features(reply)
        return feature in self._features

    # Paths and facts

    def _remote(self, path) -> str:
        return posixpath.join(self.options["root"], path)

    def _wanted(self, relative) -> bool:
        name = relative.rsplit("/", 1)[-1]

        def hit(patterns):
            return any(fnmatch.fnmatchcase(relative, p) or fnmatch.fnmatchcase(name, p) for p in patterns)
        return hit(self.options["include"]) and not hit(self.options["exclude"])

    def _modified(self, ftp, remote) -> float:
        """MDTM of `remote`, or 0.0 where the server has no MDTM (then only the size tells a change)."""
        if not self._has(ftp, "MDTM"):
            return 0.0
        reply = ftp.sendcmd(f"MDTM {wire(remote)}")
        return parse_ftp_time(reply[4:]) or 0.0

    def _facts(self, ftp, remote) -> Optional[Tuple[int, float]]:
        """(size, mtime) of a file now, or None if it does not exist (or is no file)."""
        try:
            if self._has(ftp, "MLST"):
                reply = ftp.sendcmd(f"MLST {wire(remote)}")
                line = reply.splitlines()[1] if len(reply.splitlines()) > 2 else ""
                facts = parse_facts(line.strip().split(" ", 1)[0])
                if facts.get("type", "").lower() != "file":
                    return None
                return int(facts["size"]), parse_ftp_time(facts.get("modify", "")) or 0.0
            ftp.voidcmd("TYPE I")  # after a listing ftplib leaves TYPE A, in which pyftpdlib refuses SIZE
            return ftp.size(wire(remote)), self._modified(ftp, remote)
        except ftplib.error_perm as error:
            if reply_code(error) == "550":
                return None
            raise

    # Listing

    def _entries(self, ftp, directory):
        """(name, kind, size, mtime) of each entry of `directory`: kind 'file', 'dir' or other; size and mtime None
        where the listing does not tell (LIST: sizes only, and dates are minutes at best in local time)."""
        if self._has(ftp, "MLST"):
            for line in listing_lines(ftp, f"MLSD {wire(directory)}"):
                facts_text, separator, name = line.partition(b" ")
                if not separator:
                    log.warning("%s: cannot read the MLSD line %r; skipped", self.name, line)
                    continue
                facts = parse_facts(facts_text.decode("ascii", "replace"))
                size = int(facts["size"]) if facts.get("size", "").isdigit() else None
                yield device_text(name), facts.get("type", "").lower(), size, parse_ftp_time(facts.get("modify", ""))
        else:
            for line in listing_lines(ftp, f"LIST {wire(directory)}"):
                match = LIST_LINE.match(line.decode(WIRE_ENCODING))
                if not match:
                    if not line.startswith(b"total "):
                        log.warning("%s: cannot read the LIST line %r; skipped", self.name, line)
                    continue
                kind = {"-": "file", "d": "dir"}.get(match.group("type"), "other")
                yield device_text(match.group("name").encode(WIRE_ENCODING)), kind, int(match.group("size")), None

    def _walk(self, ftp, directory, relative):
        """RemoteFile of every wanted file under `directory`; one entry's problem is that entry's, listed with it."""
        for name, kind, size, mtime in self._entries(ftp, directory):
            if name in (".", "..") or kind not in ("file", "dir"):
                continue
            child = f"{relative}/{name}" if relative else name
            remote = posixpath.join(directory, name)
            problem = unsendable(name)
            if problem:
                if kind == "dir":
                    problem = f"a folder that cannot be listed: {problem}"
                if self._wanted(child):
                    yield RemoteFile(child, size or 0, mtime or 0.0, problem=problem)
                continue
            if kind == "dir":
                try:
                    yield from self._walk(ftp, remote, child)
                except ftplib.error_perm as error:  # this folder only; the connection is fine
                    yield RemoteFile(child, 0, 0.0, problem=f"its files cannot be listed: {reply_text(str(error))}")
                continue
            if not self._wanted(child):
                continue
            try:
                if mtime is None:  # LIST: ask MDTM, which also tells a listed name the server cannot find
                    mtime = self._modified(ftp, remote)
                if size is None or PHANTOM_MARKS.intersection(name):
                    facts = self._facts(ftp, remote)
                    if facts is None:
                        raise ftplib.error_perm("550 not found")
                    size, mtime = facts
            except ftplib.error_perm as error:
                problem = f"the server cannot serve it: {reply_text(str(error))}"
                if reply_code(error) == "550":
                    problem = "the server lists this name but cannot find it (it cannot carry the name as it is)"
                yield RemoteFile(child, 0, 0.0, problem=problem)
                continue
            yield RemoteFile(child, size, mtime)

    def list(self):
        """Every wanted file under root, recursively; a name that cannot be served is listed with its problem."""
        with self._connection().session(f"listing {self.options['root']}") as ftp:
            found = list(self._walk(ftp, self.options["root"], ""))
        self._listed = {f.path: (f.size, f.mtime) for f in found if not f.problem}
        return found

    # Files

    def probe(self):
        """NOOP on this thread's connection; DeviceUnavailable while the server is away."""
        with self._connection().session("probe") as ftp:
            ftp.voidcmd("NOOP")

    def stat(self, path) -> RemoteFile:
        with self._connection().session(f"stat {path}") as ftp:
            facts = self._facts(ftp, self._remote(path))
        if facts is None:
            raise Vanished(f"{path} is no longer on {self.options['host']}")
        return RemoteFile(path, *facts)

    def read(self, path, offset):
        """Yield the bytes of `path` from `offset` (REST), then check the file stayed as it was during the copy."""
        remote = self._remote(path)
        connection = self._connection()
        with connection.session(f"RETR {remote}") as ftp:
            before = self._facts(ftp, remote)
            if before is None:
                raise Vanished(f"{path} is no longer on {connection.address}")
            size = before[0]
            check_as_listed(path, self._listed.get(path), before, offset)
            if offset == size:
                return
            ftp.voidcmd("TYPE I")
            try:
                data = ftp.transfercmd(f"RETR {wire(remote)}", rest=offset or None)
            except ftplib.error_perm as error:
                if reply_code(error) == "554":  # REST beyond the end: the file shrank since the check above
                    raise TransientError(f"{path} shrank during the copy: not finished yet") from None
                raise
            received = offset
            with data:
                while True:
                    block = data.recv(BLOCK)
                    if not block:
                        break
                    if received + len(block) > size:
                        raise TransientError(f"{path} grew beyond {size} bytes during the copy: not finished yet")
                    received += len(block)
                    yield block
                end_data(data)
            ftp.voidresp()
            after = self._facts(ftp, remote)
            if after != before or received != size:
                now = f"{after[0]} bytes" if after else "gone"
                raise TransientError(f"{path} changed during the copy ({size} bytes, got {received}, now {now}): "
                                     "not finished yet")

    def checksum(self, path) -> Optional[Checksum]:
        """The server's SHA-256 of the file (HASH or XSHA256), None where it computes none."""
        remote = self._remote(path)
        with self._connection().session(f"sha256 of {remote}") as ftp:
            self._has(ftp, "HASH")
            if "sha256" not in offered_digests(self._features):
                return None
            return Checksum("sha256", server_digest(ftp, self._features, remote, "sha256"))

    def delete(self, path):
        """DELE the file; one that is already gone counts as deleted."""
        remote = self._remote(path)
        with self._connection().session(f"DELE {remote}") as ftp:
            try:
                ftp.delete(wire(remote))
            except ftplib.error_perm as error:
                if reply_code(error) != "550" or self._facts(ftp, remote) is not None:
                    raise
