"""Source and target `mavlink`: files on a PX4 flight controller over MAVLink FTP (udp, tcp or serial URL).

Both reach the vehicle through a link (the small interface of VehicleLink): list a folder, read from an offset, CRC32,
remove, write from an offset, rename, and the armed state of its HEARTBEAT. A vehicle's link has exactly one owner:
- in one process without ROS (LocalRunner, bench, tests) the DirectLink of its URL, shared by every device of that
  process naming the URL (one udpin port cannot be bound twice, one serial device not opened twice);
- under ROS the vehicle node (filesync.ros.vehicle_node) owns the DirectLink, and the finder, downloader, remover and
  uploader get a client of its services through their DeviceContext (`vehicle_links`), never opening the URL.

Every FTP use runs inside the vehicle's lease (context.lock; shared with a `mavros` source naming the same vehicle)
and the link's own lock, because PX4 serves one FTP session. Logs are neither listed nor read nor removed while the
vehicle's HEARTBEAT says armed (PX4 writes the log from arming to disarming), and a file whose size changed since the
previous listing is reported as not complete.
"""
import calendar
import fnmatch
import posixpath
import re
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional

from filesync.devices.base import Checksum, RemoteFile, Source, Target, digest_text
from filesync.devices.vehicle.mavftp import MavFtpClient
from filesync.devices.vehicle.mavftp_wire import (CommandUnsupported, Entry, SessionRefused, VehicleFileExists,
                                                  VehicleFileNotFound, VehicleFull)
from filesync.errors import (ConfigError, DeviceUnavailable, FileError, FinalNameTaken, PermanentError, StartOver,
                             TransientError, UnsafePath)
from filesync.lock import exclusive
from filesync.options import Option, not_negative, positive

MAVROS_SYSTEM_ID = 1
_DATED_LOG = re.compile(r"(?:^|/)(\d{4})-(\d{2})-(\d{2})/(\d{2})_(\d{2})_(\d{2})\.\w+$")
BLOCK_BYTES = 64 * 1024  # what a device hands the link per call when writing: memory stays flat in the file size


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


# The options that make a vehicle's link; every device naming the same vehicle must give the same values.
LINK_OPTIONS = [
    Option("url", str, check=_check_url,
           help="The vehicle's MAVLink link: udpin:HOST:PORT, udpout:HOST:PORT, tcp:HOST:PORT or a serial device such"
                " as /dev/ttyACM0 (with baud)."),
    Option("baud", int, 921600, positive,
           help="Baud rate of a serial link (ignored for UDP and TCP)."),
    Option("source_system", int, 245, _system_id,
           help="MAVLink system id filesync sends as (1 to 255); pick one no other component on the link uses."),
    Option("source_component", int, 191, _system_id,
           help="MAVLink component id filesync sends as (1 to 255)."),
    Option("target_system", int, 1, _system_id,
           help="MAVLink system id of the vehicle."),
    Option("target_component", int, 1, _component_id,
           help="MAVLink component id of the vehicle's FTP server (1: the autopilot)."),
    Option("timeout", float, 1.0, positive,
           help="Seconds to wait for one reply before resending the request."),
    Option("retries", int, 10, positive,
           help="Resends in a row without any answer before the link counts as down."),
    Option("crc_timeout", float, 120.0, positive,
           help="Seconds to wait for the vehicle's CalcFileCRC32 (it reads the whole file, which takes a while on an "
                "SD card)."),
    Option("heartbeat_timeout", float, 5.0, positive,
           help="Seconds without a HEARTBEAT from the vehicle before it counts as unreachable."),
    # silence before a second open when the session is taken: PX4 frees an abandoned one after 10 s (newer: 30 s);
    # still taken after that (kept alive by requests from elsewhere), the vehicle's sessions are reset
    Option("session_idle", float, 31.0, not_negative,
           help="Seconds a refused FTP session may last before filesync resets the vehicle's sessions (PX4 frees an "
                "abandoned one after 10 s, newer versions 30 s)."),
]
LINK_KEYS = tuple(option.name for option in LINK_OPTIONS)
# What sources and targets share besides the link: which vehicle (its lease) and how long to wait for it.
VEHICLE_OPTIONS = [
    Option("vehicle", str, "1",
           help="Name of the vehicle; mavlink and mavros devices naming the same vehicle share its one FTP session "
                "(its lease) and must share its link options."),
    Option("lock_name", str, "",
           help="The lease's resource name; empty: vehicle:<vehicle>."),
    Option("lock_wait", float, 120.0, not_negative,
           help="Seconds to wait for the vehicle's lease while another device or process uses the vehicle's one FTP "
                "session."),
    Option("wait_disarmed", bool, True,
           help="true: touch no file while the vehicle is armed (it is flying and logging)."),
]

# What a vehicle's source (mavlink, mavros) takes besides its link: where the logs are and which ones.
LOG_SOURCE_OPTIONS = [
    Option("root", str, "/fs/microsd/log", absolute_vehicle_path,
           help="Folder on the vehicle whose logs are taken (absolute, e.g. /fs/microsd/log)."),
    Option("include", list, ["*.ulg"], file_patterns,
           help="File name patterns to take, e.g. ['*.ulg']."),
    Option("settle", bool, True,
           help="true: a file is complete only once two listings in a row show the same size (the vehicle lists "
                "no times)."),
]
TARGET_ROOT_OPTION = Option("root", str, "/fs/microsd/filesync", absolute_vehicle_path,
                            help="Folder on the vehicle that receives the files (absolute; PX4 writes only under "
                                 "/fs/microsd/).")


def link_options(options: dict) -> dict:
    """The link's part of a device's checked options."""
    return {key: options[key] for key in LINK_KEYS}


def vehicle_links(config) -> Dict[str, dict]:
    """{vehicle: link options} of every `mavlink` source and target of a filesync.config.Config; ConfigError naming
    the key when two devices give one vehicle different links (a vehicle has one link, owned by one process)."""
    links, first = {}, {}
    for role, devices in (("sources", config.sources), ("targets", config.targets)):
        for name, raw in sorted(devices.items()):
            if raw.get("kind") != "mavlink":
                continue
            key = f"{role}.{name}"
            device = (MavlinkSource if role == "sources" else MavlinkTarget)(name, raw, key)
            vehicle, options = device.options["vehicle"], link_options(device.options)
            if vehicle in links and links[vehicle] != options:
                differing = next(k for k in LINK_KEYS if links[vehicle][k] != options[k])
                raise ConfigError(f"{key}.{differing}: vehicle {vehicle!r} is reached with {differing} "
                                  f"{links[vehicle][differing]!r} by {first[vehicle]}; one vehicle has one link, "
                                  "give every device naming it the same link options")
            links.setdefault(vehicle, options)
            first.setdefault(vehicle, key)
    return links


class VehicleLink:
    """What a `mavlink` device needs of its vehicle. Callers hold `lock` (an RLock) around every use.

    Paths are absolute vehicle paths. Errors are filesync's (DeviceUnavailable when the vehicle does not answer;
    mavftp's VehicleFileNotFound, VehicleFull, SessionRefused...).
    """

    lock: threading.RLock
    armed: bool  # what the vehicle's last HEARTBEAT said

    def heartbeat(self) -> bool:
        """Wait for a fresh HEARTBEAT (DeviceUnavailable without one); returns the armed flag."""
        raise NotImplementedError

    def list_directory(self, path: str) -> List[Entry]:
        """The entries of the folder `path`."""
        raise NotImplementedError

    def read(self, path: str, offset: int, should_stop: Callable[[], Optional[str]],
             idle_wait: float) -> Iterator[bytes]:
        """The file's bytes from `offset` to its end; should_stop() between pieces may stop it (TransientError)."""
        raise NotImplementedError

    def crc32(self, path: str) -> int:
        """The vehicle's CalcFileCRC32 of the file."""
        raise NotImplementedError

    def remove(self, path: str) -> None:
        """Remove the file (VehicleFileNotFound when there is none)."""
        raise NotImplementedError

    def write(self, path: str, offset: int, blocks, progress: Callable[[int], None]) -> int:
        """Write the bytes of `blocks` at `offset` on (from 0: created, its folders too); returns the end offset."""
        raise NotImplementedError

    def rename(self, old: str, new: str) -> None:
        """Rename a file (a file under `new` may be replaced: callers check first)."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop the connection; the next use reconnects."""


def size_on_vehicle(link, path: str) -> Optional[int]:
    """The size the folder listing gives the file `path`, None when there is none (nor its folder)."""
    folder, name = posixpath.split(path)
    try:
        entries = link.list_directory(folder or "/")
    except VehicleFileNotFound:
        return None
    for entry in entries:
        if entry.name == name and not entry.is_dir:
            return entry.size
    return None


class FileWriter:
    """One file being written through a MavFtpClient: open (creating its folders from 0), write, close."""

    def __init__(self, client: MavFtpClient, path: str, offset: int, held: Callable[[str], int]):
        self.client, self.path, self.offset = client, path, offset
        if offset == 0:
            try:
                self.session = client.open_write(path, 0)
            except FileError as error:
                if isinstance(error, (VehicleFileExists, CommandUnsupported)):
                    raise
                # PX4 answers a missing folder FileNotFound, MAVSDK Fail: make the folders, then once more
                self._make_folders(posixpath.dirname(path))
                self.session = client.open_write(path, 0)
        else:
            self.session = client.open_write(path, offset, held)

    def _make_folders(self, folder):
        if folder in ("", "/"):
            return
        try:
            self.client.create_directory(folder)
        except VehicleFileNotFound:  # its parent is missing too (no mkdir -p in MAVLink FTP)
            self._make_folders(posixpath.dirname(folder))
            self.client.create_directory(folder)

    def write(self, blocks, progress=None) -> int:
        """Write `blocks` at the current offset; returns the new offset."""
        self.offset = self.client.write_blocks(self.path, self.session, self.offset, blocks, progress)
        return self.offset

    def close(self):
        """End the session (best effort)."""
        self.client.terminate_session(self.session)


class DirectLink(VehicleLink):
    """The connection to one vehicle (a MavFtpClient) with its lock: the link's one owner in this process."""

    def __init__(self, options: dict):
        self.options = dict(options)
        self.lock = threading.RLock()
        self.client = MavFtpClient(options["url"], baud=options["baud"], source_system=options["source_system"],
                                   source_component=options["source_component"],
                                   target_system=options["target_system"],
                                   target_component=options["target_component"], timeout=options["timeout"],
                                   retries=options["retries"], crc_timeout=options["crc_timeout"])

    @property
    def armed(self) -> bool:
        return self.client.armed

    def _call(self, function, *args):
        """Run a client call; a link that stopped answering is closed so the next use reconnects."""
        try:
            return function(*args)
        except DeviceUnavailable:
            self.client.close()
            raise

    def heartbeat(self) -> bool:
        timeout = self.options["heartbeat_timeout"]
        with self.lock:
            if self._call(self.client.wait_heartbeat, timeout, timeout) is None:
                self.client.close()
                raise DeviceUnavailable(f"no HEARTBEAT from system {self.options['target_system']} component "
                                        f"{self.options['target_component']} on {self.options['url']} within "
                                        f"{timeout:g} s")
            return self.client.armed

    def list_directory(self, path):
        with self.lock:
            return self._call(self.client.list_directory, path)

    def read(self, path, offset, should_stop=None, idle_wait=0.0):
        with self.lock:
            try:
                yield from self.client.read(path, offset, should_stop, idle_wait)
            except DeviceUnavailable:
                self.client.close()
                raise

    def crc32(self, path):
        with self.lock:
            return self._call(self.client.crc32, path)

    def remove(self, path):
        with self.lock:
            self._call(self.client.remove, path)

    def rename(self, old, new):
        with self.lock:
            self._call(self.client.rename, old, new)

    def open_writer(self, path: str, offset: int) -> FileWriter:
        """A FileWriter for `path` from `offset` (callers hold the lock until they close it)."""
        return self._call(FileWriter, self.client, path, offset, lambda name: size_on_vehicle(self, name) or 0)

    def write(self, path, offset, blocks, progress):
        with self.lock:
            writer = self.open_writer(path, offset)
            try:
                return self._call(writer.write, blocks, progress)
            finally:
                if self.client.connected:  # after a lost link there is no session left to end
                    writer.close()

    def close(self):
        with self.lock:
            self.client.close()


_direct_links: Dict[tuple, DirectLink] = {}
_direct_links_lock = threading.Lock()


def direct_link(options: dict) -> DirectLink:
    """The DirectLink for these link options in this process (made by the first device that asks); devices naming
    the same vehicle give the same options (vehicle_links checks that for the vehicle node)."""
    key = tuple(sorted(options.items()))
    with _direct_links_lock:
        link = _direct_links.get(key)
        if link is None:
            link = _direct_links[key] = DirectLink(options)
        return link


class _VehicleDevice:
    """What the mavlink source and target share: the link, the lease and the armed check."""

    max_transfers = 1
    max_transfers_reason = "the vehicle serves one MAVLink FTP session"

    def _setup(self, key):
        options = self.options
        if options["source_system"] in (MAVROS_SYSTEM_ID, options["target_system"]):
            raise ConfigError(f"{key}.source_system: {options['source_system']} is taken by the vehicle or MAVROS "
                              f"(which answers FTP replies to its id with ResetSessions); use another, e.g. 245")
        if not options["vehicle"]:
            raise ConfigError(f"{key}.vehicle: must not be empty")
        self.root = posixpath.normpath(options["root"])
        self.lock_name = options["lock_name"] or f"vehicle:{options['vehicle']}"
        self._link = None

    @property
    def link(self) -> VehicleLink:
        """The vehicle's link: the vehicle node's client under ROS, else this process's DirectLink."""
        if self._link is None:
            links = self.context.vehicle_links if self.context is not None else None
            options = link_options(self.options)
            self._link = links.link(self.options["vehicle"], options) if links is not None else direct_link(options)
        return self._link

    def _vehicle(self):
        """Hold the link's lock and the vehicle's lease; yields the lease (or None without a lock service)."""
        return exclusive(self.link.lock, self.context, self.lock_name, self.options["lock_wait"])

    def _remote(self, path: str) -> str:
        return posixpath.join(self.root, path) if path else self.root

    def _refuse_armed(self, what: str, always: bool = False):
        """TransientError when the vehicle is armed (and wait_disarmed is set, or `always`)."""
        if (always or self.options["wait_disarmed"]) and self.link.heartbeat():
            raise TransientError(f"the vehicle is armed; {what} after it disarms")

    def probe(self):
        """Raise DeviceUnavailable unless a HEARTBEAT from the vehicle arrives and its FTP server answers (a listing
        of the root: a heartbeat seen just before the vehicle went away would still count for a moment)."""
        with self.link.lock:
            self.link.heartbeat()
            try:
                self.link.list_directory(self.root)
            except VehicleFileNotFound:
                pass  # no root yet: the server answered

    def close(self):
        """Close the connection (after the current use ends); the next call reconnects."""
        self.link.close()


def _listed_problem(name: str) -> Optional[str]:
    """Why a name from a listing cannot be a file's name (it would leave the folder), or None."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        return (f"the vehicle listed the name {name!r}, which holds '/' or is '.' or '..': not carried, so nothing "
                "outside the root is read")
    return None


def _shown(name: str) -> str:
    """A listed name that cannot be carried, made into one harmless path component for the failed record."""
    return name.replace("%", "%25").replace("/", "%2F").replace(".", "%2E") if _listed_problem(name) else name


class MavlinkSource(_VehicleDevice, Source):
    """Files under `root` on a MAVLink FTP server (a PX4 flight controller), listed recursively."""

    kind = "mavlink"
    checksum_algorithm = "mavftp-crc32"
    can_delete = True
    OPTIONS = LINK_OPTIONS + VEHICLE_OPTIONS + LOG_SOURCE_OPTIONS + [
        # before removing a log, watch its size this long: a log still being written is not removed
        Option("growth_check", float, 1.0, not_negative,
               help="Seconds to watch a log's size just before removing it: a log still growing is not removed."),
    ]

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        self._setup(key)
        self._previous_sizes = {}  # path -> size at the previous listing

    def _included(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.options["include"])

    def _walk(self) -> List[RemoteFile]:
        """Every included file under root (names that cannot be carried with their problem); an absent root holds
        nothing."""
        found = []
        pending = [""]
        while pending:
            relative = pending.pop()
            try:
                entries = self.link.list_directory(self._remote(relative))
            except VehicleFileNotFound:
                continue  # no log yet (PX4 creates the folder at the first log), or removed meanwhile
            for entry in entries:
                problem = _listed_problem(entry.name)
                path = posixpath.join(relative, _shown(entry.name)) if relative else _shown(entry.name)
                if problem:
                    found.append(RemoteFile(path, entry.size, 0.0, True, problem))
                elif entry.is_dir:
                    pending.append(path)
                elif self._included(entry.name):
                    found.append(RemoteFile(path, entry.size, log_time(path)))
        return sorted(found, key=lambda item: item.path)

    def list(self) -> Iterator[RemoteFile]:
        """Every included file under root, with paths relative to it; nothing while the vehicle is armed."""
        with self._vehicle():
            if self.options["wait_disarmed"] and self.link.heartbeat():
                return iter(())
            files = self._walk()
        settle = self.options["settle"]
        listing = []
        for found in files:
            complete = not settle or self._previous_sizes.get(found.path) == found.size
            listing.append(RemoteFile(found.path, found.size, found.mtime, complete, found.problem))
        self._previous_sizes = {found.path: found.size for found in files}
        return iter(listing)

    def stat(self, path: str) -> RemoteFile:
        """The file's size as its directory listing gives it; Vanished if it is gone."""
        with self._vehicle():
            size = size_on_vehicle(self.link, self._remote(path))
        if size is None:
            raise VehicleFileNotFound(f"{self._remote(path)}: no longer on the vehicle")
        return RemoteFile(path, size, log_time(path), True)

    def read(self, path: str, offset: int) -> Iterator[bytes]:
        """Yield the file's bytes from `offset` on, holding the vehicle for the whole read."""
        with self._vehicle() as lease:
            self._refuse_armed("logs are read")

            def should_stop() -> Optional[str]:
                if lease is not None and lease.lost.is_set():
                    return f"lost the lease on {self.lock_name}"
                if self.options["wait_disarmed"] and self.link.armed:
                    return "the vehicle armed during the download; it goes on after it disarms"
                return None

            yield from self.link.read(self._remote(path), offset, should_stop, self.options["session_idle"])

    def checksum(self, path: str) -> Optional[Checksum]:
        """The vehicle's CalcFileCRC32 of the file."""
        with self._vehicle():
            try:
                return Checksum("mavftp-crc32", self.link.crc32(self._remote(path)))
            except CommandUnsupported:
                return None  # a server without CalcFileCRC32: the engine still checks the size

    def delete(self, path: str) -> None:
        """Remove the log from the vehicle: never while it is armed, never while its size still changes (a log being
        written). The engine calls it only after every target verified this version and the vehicle's CRC32 of the
        file still equals the copy's."""
        remote = self._remote(path)
        with self._vehicle():
            self._refuse_armed("logs are removed", always=True)
            size = size_on_vehicle(self.link, remote)
            if size is None:
                return  # already gone
            if self.options["growth_check"]:
                time.sleep(self.options["growth_check"])
                now = size_on_vehicle(self.link, remote)
                if now != size:
                    raise TransientError(f"{remote}: not removed, the log is still being written ({size} -> {now} "
                                         "bytes)")
                self._refuse_armed("logs are removed", always=True)
            try:
                self.link.remove(remote)
            except VehicleFileNotFound:
                pass  # gone meanwhile (or our resent RemoveFile found it removed): removed either way


class MavlinkTarget(_VehicleDevice, Target):
    """Files written to a vehicle over MAVLink FTP under `root`: <name>.part by CreateFile/OpenFileWO + pipelined
    WriteFile (resumed from the size the vehicle holds), Rename to the final name, verified by CalcFileCRC32."""

    kind = "mavlink"
    resumable = True
    verifiable = True
    digests = ("mavftp-crc32",)
    readable = False
    can_delete = True
    OPTIONS = LINK_OPTIONS + VEHICLE_OPTIONS + [TARGET_ROOT_OPTION]

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        self._setup(key)

    def location(self, path):
        return f"vehicle {self.options['vehicle']}:{self._remote(path)}"

    def stat(self, path):
        with self._vehicle():
            return size_on_vehicle(self.link, self._remote(path))

    def digest(self, path, algorithm):
        if algorithm != "mavftp-crc32":
            raise PermanentError(f"target {self.name} (mavlink) computes no {algorithm}")
        with self._vehicle():
            return digest_text(self.link.crc32(self._remote(path)))

    def held(self, path, note=""):
        with self._vehicle():
            return size_on_vehicle(self.link, self._remote(self.part_name(path))) or 0

    def discard(self, path):
        with self._vehicle():
            try:
                self.link.remove(self._remote(self.part_name(path)))
            except VehicleFileNotFound:
                pass

    def write(self, path, stream, offset, size, progress):
        def blocks():
            left = size - offset
            while left > 0:
                block = stream.read(min(BLOCK_BYTES, left))
                if not block:
                    raise FileError(f"the staged copy of {path} ended {left} bytes early")
                left -= len(block)
                yield block

        with self._vehicle():
            self._refuse_armed("files are written")
            self.link.write(self._remote(self.part_name(path)), offset, blocks(), progress)

    def publish(self, path, size, replace=False):
        final, part = self._remote(path), self._remote(self.part_name(path))
        with self._vehicle():
            if size_on_vehicle(self.link, final) is not None:
                if not replace:
                    raise FinalNameTaken(f"{self.location(path)} already exists")
                self.link.remove(final)  # PX4 on NuttX may refuse a rename onto a name that exists
            try:
                self.link.rename(part, final)
            except VehicleFileNotFound:
                # a resent Rename whose first answer was lost finds the part gone: done if the final name holds it
                if size_on_vehicle(self.link, part) is None and size_on_vehicle(self.link, final) == size:
                    return self.location(path)
                raise
            except CommandUnsupported:
                raise PermanentError(f"{self.location(path)}: the vehicle's FTP server has no Rename, so an upload "
                                     f"cannot get its final name; it stays as {part}") from None
        return self.location(path)

    def delete(self, path):
        with self._vehicle():
            try:
                self.link.remove(self._remote(path))
            except VehicleFileNotFound:
                pass


class LinkHost:
    """The vehicle node's library side (no ROS here): one DirectLink per vehicle, and the reads and writes that its
    clients spread over several calls (a read or write session stays open between calls; any other session of the
    vehicle, and a session left idle for IDLE_SECONDS, closes it, since PX4 serves one session)."""

    IDLE_SECONDS = 3.0

    def __init__(self, links: Dict[str, dict]):
        self.links = {vehicle: DirectLink(options) for vehicle, options in links.items()}
        self._reads = {}  # vehicle -> {"path", "offset", "size", "session", "blocks", "rest", "used"}
        self._writes = {}  # vehicle -> {"writer", "used"}

    def link(self, vehicle: str) -> DirectLink:
        """The DirectLink of `vehicle`; PermanentError when the configuration has no such `mavlink` vehicle."""
        try:
            return self.links[vehicle]
        except KeyError:
            raise PermanentError(f"no mavlink vehicle {vehicle!r} in this configuration (vehicle node serves "
                                 f"{', '.join(sorted(self.links)) or 'none'})") from None

    def _using(self, vehicle, function):
        """Run function(link) under the link's lock; a link that went down loses its open sessions."""
        link = self.link(vehicle)
        with link.lock:
            try:
                return function(link)
            except DeviceUnavailable:
                self._reads.pop(vehicle, None)
                self._writes.pop(vehicle, None)
                raise

    def _end_read(self, vehicle):
        read = self._reads.pop(vehicle, None)
        if read is not None:
            read["blocks"].close()
            self.links[vehicle].client.terminate_session(read["session"])

    def _end_write(self, vehicle):
        write = self._writes.pop(vehicle, None)
        if write is not None:
            write["writer"].close()

    def state(self, vehicle: str) -> bool:
        """The armed flag of a fresh HEARTBEAT."""
        return self._using(vehicle, lambda link: link.heartbeat())

    def list_directory(self, vehicle: str, path: str) -> List[Entry]:
        return self._using(vehicle, lambda link: link.list_directory(path))

    def crc32(self, vehicle: str, path: str) -> int:
        return self._using(vehicle, lambda link: link.crc32(path))

    def remove(self, vehicle: str, path: str) -> None:
        self._using(vehicle, lambda link: link.remove(path))

    def rename(self, vehicle: str, old: str, new: str) -> None:
        self._using(vehicle, lambda link: link.rename(old, new))

    def read(self, vehicle: str, path: str, offset: int, max_bytes: int, finish: bool = False) -> tuple:
        """(data, size at open, armed): up to `max_bytes` of `path` from `offset`, continuing the open read when it
        is at that offset. `finish` ends the read of `path` instead."""
        def run(link):
            read = self._reads.get(vehicle)
            if finish:
                if read is not None and read["path"] == path:
                    self._end_read(vehicle)
                return b"", 0, link.armed
            if read is not None and (read["path"], read["offset"]) != (path, offset):
                self._end_read(vehicle)
                read = None
            if read is None:
                self._end_write(vehicle)
                # under the link's lock: the vehicle node's other calls on this link (the finder's listings) wait,
                # so the silence that lets an abandoned session time out is real
                session, size = link.client.open_read(path, link.options["session_idle"])
                if offset > size:
                    link.client.terminate_session(session)
                    raise FileError(f"{path}: asked to resume at byte {offset} but the vehicle's file has {size} "
                                    "bytes")
                read = self._reads[vehicle] = {"path": path, "offset": offset, "size": size, "session": session,
                                               "blocks": link.client.read_session(path, session, offset, size),
                                               "rest": b""}
            read["used"] = time.monotonic()
            data = read["rest"]
            try:
                while not data and read["offset"] < read["size"]:
                    data = next(read["blocks"], b"")
                    if not data:
                        raise FileError(f"{path}: the vehicle gave {read['offset']} of {read['size']} bytes")
            except Exception:
                self._end_read(vehicle)
                raise
            data, read["rest"] = data[:max_bytes], data[max_bytes:]
            read["offset"] += len(data)
            return data, read["size"], link.armed
        return self._using(vehicle, run)

    def write(self, vehicle: str, path: str, offset: int, data: bytes, finish: bool) -> int:
        """Write `data` at `offset` of `path` (0: created), continuing the open write when it is at that offset;
        `finish` ends it. Returns the offset the vehicle confirmed."""
        def run(link):
            write = self._writes.get(vehicle)
            if write is not None and (write["writer"].path, write["writer"].offset) != (path, offset):
                self._end_write(vehicle)
                write = None
            if write is None:
                self._end_read(vehicle)
                write = self._writes[vehicle] = {"writer": link.open_writer(path, offset)}
            write["used"] = time.monotonic()
            try:
                end = write["writer"].write([data]) if data else offset
            except Exception:
                self._end_write(vehicle)
                raise
            if finish:
                self._end_write(vehicle)
            return end
        return self._using(vehicle, run)

    def expire(self):
        """Close read and write sessions idle for IDLE_SECONDS (a client that stopped or died)."""
        now = time.monotonic()
        for vehicle, link in self.links.items():
            with link.lock:
                read, write = self._reads.get(vehicle), self._writes.get(vehicle)
                try:
                    if read is not None and now - read["used"] > self.IDLE_SECONDS:
                        self._end_read(vehicle)
                    if write is not None and now - write["used"] > self.IDLE_SECONDS:
                        self._end_write(vehicle)
                except DeviceUnavailable:
                    pass  # the next call finds the link down

    def close(self):
        """End open sessions and close every link."""
        for vehicle, link in self.links.items():
            with link.lock:
                try:
                    self._end_read(vehicle)
                    self._end_write(vehicle)
                except DeviceUnavailable:
                    pass
                link.close()


# Errors that cross the vehicle node's services by class name (the client raises the same class again).
ERROR_CLASSES = {cls.__name__: cls for cls in (
    DeviceUnavailable, TransientError, FileError, PermanentError, FinalNameTaken, StartOver, UnsafePath,
    VehicleFileNotFound, VehicleFileExists, VehicleFull, SessionRefused, CommandUnsupported)}
