"""Source `mavlink`: PX4 flight logs straight over MAVLink FTP (udp, tcp or serial), with our own burst-read client.

Every MAVLink FTP use, listing and reading alike, runs inside the vehicle's lease (context.lock) and this object's
own lock, because the vehicle serves one FTP session: finder and downloader must never hold one at once. Nothing is
listed or read while the vehicle's HEARTBEAT says armed (PX4 writes the log from arming to disarming), and a file
whose size changed since the previous listing is reported as not complete.
"""
import calendar
import fnmatch
import posixpath
import re
import threading
from typing import Iterator, List, Optional

from filesync.devices.base import Checksum, RemoteFile, Source
from filesync.devices.mavftp import CommandUnsupported, MavFtpClient, VehicleFileNotFound
from filesync.errors import ConfigError, DeviceUnavailable, TransientError
from filesync.lock import exclusive
from filesync.options import Option, not_negative, positive

MAVROS_SYSTEM_ID = 1
_DATED_LOG = re.compile(r"(?:^|/)(\d{4})-(\d{2})-(\d{2})/(\d{2})_(\d{2})_(\d{2})\.\w+$")


def _check_url(url):
    for prefix in ("udpin:", "udpout:", "udp:", "tcp:"):
        if url.startswith(prefix):
            host, _, port = url[len(prefix):].rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                return f"expected {prefix}HOST:PORT, got {url!r}"
            return None
    if url.startswith("/dev/") or url.startswith("COM"):
        return None
    return f"expected udpout:HOST:PORT, udpin:HOST:PORT, tcp:HOST:PORT or a serial device like /dev/ttyACM0, got {url!r}"


def _system_id(value):
    return None if 1 <= value <= 255 else f"must be from 1 to 255, got {value}"


def _component_id(value):
    return None if 0 <= value <= 255 else f"must be from 0 to 255, got {value}"


def absolute_vehicle_path(value):
    """Option check: an absolute path on the vehicle's file system."""
    return None if value.startswith("/") else f"must be an absolute path on the vehicle, got {value!r}"


def file_patterns(value):
    """Option check: a non-empty list of file name patterns."""
    if not value or not all(isinstance(item, str) and item for item in value):
        return f"expected a list of file name patterns like ['*.ulg'], got {value!r}"
    return None


def log_time(path: str) -> float:
    """The UTC time a PX4 log path like 2024-05-01/12_30_00.ulg names, or 0.0 for other names (sessNNN/logNNN)."""
    match = _DATED_LOG.search(path)
    if not match:
        return 0.0
    try:
        return float(calendar.timegm(tuple(int(part) for part in match.groups()) + (0, 0, 0)))
    except (ValueError, OverflowError):
        return 0.0


class MavlinkSource(Source):
    """Files under `root` on a MAVLink FTP server (a PX4 flight controller), listed recursively."""

    kind = "mavlink"
    checksum_algorithm = "mavftp-crc32"
    OPTIONS = [
        Option("url", str, check=_check_url),
        Option("baud", int, 921600, positive),
        Option("source_system", int, 245, _system_id),
        Option("source_component", int, 191, _system_id),
        Option("target_system", int, 1, _system_id),
        Option("target_component", int, 1, _component_id),
        Option("root", str, "/fs/microsd/log", absolute_vehicle_path),
        Option("include", list, ["*.ulg"], file_patterns),
        Option("wait_disarmed", bool, True),
        Option("settle", bool, True),
        Option("timeout", float, 1.0, positive),  # longest wait for one reply before resending
        Option("retries", int, 10, positive),  # resends in a row without any answer before the link counts as down
        Option("crc_timeout", float, 120.0, positive),  # CalcFileCRC32 of a large file takes the vehicle a while
        Option("heartbeat_timeout", float, 5.0, positive),
        # silence before a second open when the session is taken: PX4 frees an abandoned one after 10 s (newer: 30 s)
        Option("session_idle", float, 31.0, not_negative),
        Option("vehicle", str, "1"),  # sources naming the same vehicle (mavlink, mavros) share its one FTP session
        Option("lock_name", str, ""),  # the lease's resource name; default vehicle:<vehicle>
        Option("lock_wait", float, 120.0, not_negative),  # how long to wait for the vehicle's lease
    ]

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        options = self.options
        if options["source_system"] in (MAVROS_SYSTEM_ID, options["target_system"]):
            raise ConfigError(f"{key}.source_system: {options['source_system']} is taken by the vehicle or MAVROS "
                              f"(which answers FTP replies to its id with ResetSessions); use another, e.g. 245")
        self.root = posixpath.normpath(options["root"])
        self.lock_name = options["lock_name"] or f"vehicle:{options['vehicle']}"
        self.client = MavFtpClient(options["url"], baud=options["baud"], source_system=options["source_system"],
                                   source_component=options["source_component"],
                                   target_system=options["target_system"],
                                   target_component=options["target_component"], timeout=options["timeout"],
                                   retries=options["retries"], crc_timeout=options["crc_timeout"])
        # One connection, used by one thread at a time: finder and downloader share this object in one process
        # (where the lease, having one owner, does not separate them).
        self._lock = threading.RLock()
        self._previous_sizes = {}  # path -> size at the previous listing

    # ----- helpers -----

    def _vehicle(self):
        """Hold this object's lock and the vehicle's lease; yields the lease (or None without a lock service)."""
        return exclusive(self._lock, self.context, self.lock_name, self.options["lock_wait"])

    def _heartbeat(self):
        timeout = self.options["heartbeat_timeout"]
        heartbeat = self.client.wait_heartbeat(max_age=timeout, timeout=timeout)
        if heartbeat is None:
            raise DeviceUnavailable(f"no HEARTBEAT from system {self.options['target_system']} component "
                                    f"{self.options['target_component']} on {self.options['url']} within {timeout:g} s")
        return heartbeat

    def _armed(self) -> bool:
        """True when reading must wait: wait_disarmed is set and the vehicle says it is armed."""
        if not self.options["wait_disarmed"]:
            return False
        self._heartbeat()
        return self.client.armed

    def _remote(self, path: str) -> str:
        return posixpath.join(self.root, path)

    def _included(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.options["include"])

    def _walk(self) -> List[tuple]:
        """(relative path, size) of every included file under root; an absent root holds nothing."""
        found = []
        pending = [""]
        while pending:
            relative = pending.pop()
            try:
                entries = self.client.list_directory(self._remote(relative) if relative else self.root)
            except VehicleFileNotFound:
                continue  # no log yet (PX4 creates the folder at the first log), or removed meanwhile
            for entry in entries:
                path = posixpath.join(relative, entry.name) if relative else entry.name
                if entry.is_dir:
                    pending.append(path)
                elif self._included(entry.name):
                    found.append((path, entry.size))
        return sorted(found)

    # ----- Source -----

    def probe(self):
        """Raise DeviceUnavailable unless a HEARTBEAT from the vehicle arrives."""
        with self._lock:
            try:
                self._heartbeat()
            except DeviceUnavailable:
                self.client.close()
                raise

    def list(self) -> Iterator[RemoteFile]:
        """Every included file under root, with paths relative to it; nothing while the vehicle is armed."""
        with self._vehicle():
            try:
                if self._armed():
                    return iter(())
                files = self._walk()
            except DeviceUnavailable:
                self.client.close()
                raise
        settle = self.options["settle"]
        listing = []
        for path, size in files:
            complete = not settle or self._previous_sizes.get(path) == size
            listing.append(RemoteFile(path, size, log_time(path), complete))
        self._previous_sizes = dict(files)
        return iter(listing)

    def stat(self, path: str) -> RemoteFile:
        """The file's size as its directory listing gives it; PermanentError if it is gone."""
        folder, name = posixpath.split(path)
        with self._vehicle():
            entries = self.client.list_directory(self._remote(folder) if folder else self.root)
        for entry in entries:
            if entry.name == name and not entry.is_dir:
                return RemoteFile(path, entry.size, log_time(path), True)
        raise VehicleFileNotFound(f"{self._remote(path)}: no longer on the vehicle")

    def read(self, path: str, offset: int) -> Iterator[bytes]:
        """Yield the file's bytes from `offset` on, holding the vehicle for the whole read."""
        with self._vehicle() as lease:
            try:
                if self._armed():
                    raise TransientError(f"{path}: the vehicle is armed; logs are read after it disarms")

                def should_stop() -> Optional[str]:
                    if lease is not None and lease.lost.is_set():
                        return f"lost the lease on {self.lock_name}"
                    if self.options["wait_disarmed"] and self.client.armed:
                        return "the vehicle armed during the download; it goes on after it disarms"
                    return None

                yield from self.client.read(self._remote(path), offset, should_stop, self.options["session_idle"])
            except DeviceUnavailable:
                self.client.close()
                raise

    def checksum(self, path: str) -> Optional[Checksum]:
        """The vehicle's CalcFileCRC32 of the file."""
        with self._vehicle():
            try:
                return Checksum("mavftp-crc32", self.client.crc32(self._remote(path)))
            except CommandUnsupported:
                return None  # a server without CalcFileCRC32: the engine still checks the size
            except DeviceUnavailable:
                self.client.close()
                raise

    def close(self):
        """Close the MAVLink connection (after the current use ends); the next call reconnects."""
        with self._lock:
            self.client.close()
