"""An FTP server as a source: a recursive listing (MLSD where the server offers it, LIST otherwise), downloads that
resume with REST from the checkpoint, and a check that the file did not change while it was copied.

A file counts as not finished (TransientError: retried later, its copied bytes kept) when its size or modification
time differs from what the listing said, changes during the copy, or more bytes arrive than it had when the copy
began. A server that cannot be reached is DeviceUnavailable (see filesync.devices.ftp.connection).
"""
import calendar
import fnmatch
import ftplib
import logging
import posixpath
import re
import threading
import time
from typing import Dict, Optional, Tuple

from filesync.devices.base import RemoteFile, Source
from filesync.devices.ftp.connection import OPTIONS, FtpConnection
from filesync.errors import PermanentError, TransientError
from filesync.options import Option
from filesync.paths import PART_SUFFIX

log = logging.getLogger(__name__)

BLOCK = 256 * 1024
# A Unix `ls -l` line, the LIST format of vsftpd, ProFTPD, pure-ftpd and pyftpdlib.
LIST_LINE = re.compile(r"^(?P<type>[-dlbcps])\S{9}\S*\s+\d+\s+\S+\s+\S+\s+(?P<size>\d+)\s+"
                       r"\w{3}\s+\d{1,2}\s+(?:\d{1,2}:\d{2}|\d{4})\s(?P<name>.+)$")


def _check_globs(patterns):
    bad = [p for p in patterns if not isinstance(p, str) or not p]
    return f"expected a list of glob patterns, got {bad[0]!r}" if bad else None


def parse_ftp_time(text) -> Optional[float]:
    """Seconds since the epoch from an MDTM reply or an MLSD 'modify' fact (YYYYMMDDHHMMSS[.sss], UTC; RFC 3659)."""
    match = re.match(r"^(\d{14})(\.\d+)?$", text.strip())
    if not match:
        return None
    seconds = calendar.timegm(time.strptime(match.group(1), "%Y%m%d%H%M%S"))
    return seconds + (float(match.group(2)) if match.group(2) else 0.0)


class FtpSource(Source):
    """Files under `root` on an FTP server, with include/exclude globs matched against the path or the bare name."""

    kind = "ftp"
    OPTIONS = OPTIONS + [
        Option("include", list, ["*"], _check_globs),
        Option("exclude", list, [".*", "*" + PART_SUFFIX], _check_globs),
    ]

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        self._lock = threading.Lock()
        # The engine lists and downloads from different threads; ftplib is not thread-safe: one connection each.
        self._connections: Dict[int, Tuple[threading.Thread, FtpConnection]] = {}
        self._features: Optional[set] = None  # FEAT answer, learnt once per server
        self._listed: Dict[str, Tuple[int, float]] = {}  # path -> (size, mtime) at the last listing

    # Connections

    def _connection(self) -> FtpConnection:
        me = threading.current_thread()
        with self._lock:
            entry = self._connections.get(me.ident)
            if entry is None or entry[0] is not me:
                entry = (me, FtpConnection(self.options, self.key))
                self._connections[me.ident] = entry
            return entry[1]

    def close(self):
        """Close this thread's connection and those of threads that have ended (never one in use elsewhere)."""
        me = threading.current_thread()
        with self._lock:
            for ident, (thread, connection) in list(self._connections.items()):
                if thread is me or not thread.is_alive():
                    connection.close()
                    del self._connections[ident]

    def _has(self, ftp, feature) -> bool:
        if self._features is None:
            try:
                reply = ftp.sendcmd("FEAT")
            except ftplib.error_perm:  # 500/502: a server too old for FEAT has none of the extensions
                reply = ""
            self._features = {line.strip().split(" ")[0].upper() for line in reply.splitlines()[1:-1]}
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
        reply = ftp.sendcmd(f"MDTM {remote}")
        return parse_ftp_time(reply[4:]) or 0.0

    def _facts(self, ftp, remote) -> Optional[Tuple[int, float]]:
        """(size, mtime) of a file now, or None if it does not exist (or is no file)."""
        try:
            if self._has(ftp, "MLST"):
                reply = ftp.sendcmd(f"MLST {remote}")
                line = reply.splitlines()[1] if len(reply.splitlines()) > 2 else ""
                facts = dict(part.split("=", 1) for part in line.strip().split(" ", 1)[0].split(";") if "=" in part)
                if facts.get("type", "").lower() != "file":
                    return None
                return int(facts["size"]), parse_ftp_time(facts.get("modify", "")) or 0.0
            ftp.voidcmd("TYPE I")  # after a listing ftplib leaves TYPE A, in which pyftpdlib refuses SIZE
            return ftp.size(remote), self._modified(ftp, remote)
        except ftplib.error_perm as error:
            if str(error).startswith("550"):
                return None
            raise

    # Listing

    def _walk_mlsd(self, ftp, directory, relative):
        for name, facts in ftp.mlsd(directory, ["type", "size", "modify"]):
            kind = facts.get("type", "").lower()
            child = f"{relative}/{name}" if relative else name
            if kind == "dir":
                yield from self._walk_mlsd(ftp, posixpath.join(directory, name), child)
            elif kind == "file":
                size = int(facts["size"]) if "size" in facts else ftp.size(posixpath.join(directory, name))
                yield child, size, parse_ftp_time(facts.get("modify", "")) or 0.0

    def _walk_list(self, ftp, directory, relative):
        lines = []
        ftp.retrlines(f"LIST {directory}", lines.append)
        for line in lines:
            match = LIST_LINE.match(line)
            if not match:
                if not line.startswith("total "):
                    log.warning("%s: cannot read the LIST line %r; skipped", self.name, line)
                continue
            name = match.group("name")
            if name in (".", ".."):
                continue
            child = f"{relative}/{name}" if relative else name
            if match.group("type") == "d":
                yield from self._walk_list(ftp, posixpath.join(directory, name), child)
            elif match.group("type") == "-":
                yield child, int(match.group("size")), None

    def list(self):
        """Every wanted file under root, recursively."""
        found = []
        with self._connection().session(f"listing {self.options['root']}") as ftp:
            if self._has(ftp, "MLST"):
                entries = list(self._walk_mlsd(ftp, self.options["root"], ""))
            else:
                entries = list(self._walk_list(ftp, self.options["root"], ""))
            for path, size, mtime in entries:
                if not self._wanted(path):
                    continue
                if mtime is None:  # LIST dates are minutes at best and local time: ask MDTM
                    ftp.voidcmd("TYPE I")
                    mtime = self._modified(ftp, self._remote(path))
                found.append(RemoteFile(path, size, mtime))
        self._listed = {f.path: (f.size, f.mtime) for f in found}
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
            raise PermanentError(f"{path} is no longer on {self.options['host']}")
        return RemoteFile(path, *facts)

    def read(self, path, offset):
        """Yield the bytes of `path` from `offset` (REST), then check the file stayed as it was during the copy."""
        remote = self._remote(path)
        connection = self._connection()
        with connection.session(f"RETR {remote}") as ftp:
            before = self._facts(ftp, remote)
            if before is None:
                raise PermanentError(f"{path} is no longer on {connection.address}")
            size = before[0]
            listed = self._listed.get(path)
            if listed is not None and listed != before:
                raise TransientError(f"{path} changed since it was listed ({listed[0]} -> {size} bytes): "
                                     "not finished yet")
            if offset > size:
                raise TransientError(f"{path} is {size} bytes now, less than the {offset} already copied: it changed")
            if offset == size:
                return
            ftp.voidcmd("TYPE I")
            try:
                data = ftp.transfercmd(f"RETR {remote}", rest=offset or None)
            except ftplib.error_perm as error:
                if str(error).startswith("554"):  # REST beyond the end: the file shrank since the check above
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
            ftp.voidresp()
            after = self._facts(ftp, remote)
            if after != before or received != size:
                now = f"{after[0]} bytes" if after else "gone"
                raise TransientError(f"{path} changed during the copy ({size} bytes, got {received}, now {now}): "
                                     "not finished yet")

    def delete(self, path):
        """DELE the file; one that is already gone counts as deleted."""
        remote = self._remote(path)
        with self._connection().session(f"DELE {remote}") as ftp:
            try:
                ftp.delete(remote)
            except ftplib.error_perm as error:
                if not str(error).startswith("550") or self._facts(ftp, remote) is not None:
                    raise
