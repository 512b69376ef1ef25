"""Source `mavros`: PX4 flight logs through MAVROS's FTP services (/mavros/ftp/*), when MAVROS owns the link.

MAVROS reads with sequential 239-byte ReadFile requests (no burst), does one operation at a time ("FTP: Busy": the
next call fails), never resends, and answers a timeout with r_errno 110: on a lossy link this source retries, with smaller reads
after a timeout (each lost packet costs a whole call's timeout). MAVROS up to 1.21.0 asks PX4 >= v1.13 for
0 bytes per read and gets them: this source detects that and refuses to call such a file read (the `mavlink` source,
which speaks MAVLink FTP itself, avoids the bug). Every FTP use holds the vehicle's lease, shared with a `mavlink`
source for the same vehicle through the option `vehicle`. rospy and mavros_msgs are imported only when this source is
used.
"""
import errno
import fnmatch
import posixpath
import threading
import time
from typing import Iterator, List, Optional

from filesync.devices.base import Checksum, RemoteFile, Source
from filesync.devices.mavlink import absolute_vehicle_path, file_patterns, log_time
from filesync.errors import ConfigError, DeviceUnavailable, FileError, PermanentError, TransientError, Vanished
from filesync.lock import exclusive
from filesync.options import Option, not_negative, positive

MAX_DATA = 239  # bytes per ReadFile: a read of N bytes takes N/239 round trips through MAVROS
# MAVROS reads on while a reply carries a full 239 bytes, so a call for k * 239 bytes costs k + 1 round trips and one
# for k * 239 - 1 bytes costs k: reads ask for the latter.
_MISSING = (0, errno.ENOENT)  # MAVROS 1.x leaves r_errno 0 for NAK FileNotFound, which it does not know


def _namespace(value):
    return None if value.startswith("/") and not value.endswith("/") else \
        f"must be an absolute ROS namespace like /mavros, got {value!r}"


def _chunk(value):
    return None if MAX_DATA <= value <= 1 << 20 else f"must be from {MAX_DATA} to {1 << 20} bytes, got {value}"


class MavrosEmptyRead(TransientError):
    """MAVROS answered a read before the end of the file with success and no data (the bug of MAVROS <= 1.21.0)."""


class MavrosSource(Source):
    """Files under `root` on the vehicle, listed and read through MAVROS's FTP services in `namespace`."""

    kind = "mavros"
    can_delete = True
    checksum_algorithm = "mavftp-crc32"
    OPTIONS = [
        Option("namespace", str, "/mavros", _namespace),
        Option("root", str, "/fs/microsd/log", absolute_vehicle_path),
        Option("include", list, ["*.ulg"], file_patterns),
        Option("wait_disarmed", bool, True),
        Option("settle", bool, True),
        Option("chunk_bytes", int, 64 * MAX_DATA, _chunk),  # most bytes per /ftp/read call (MAVROS: 200 ms per 239)
        Option("retries", int, 10, positive),  # tries of one call that answers Busy or ETIMEDOUT
        Option("retry_wait", float, 0.2, not_negative),  # pause before retrying a call MAVROS refused as busy
        # a read that gets no byte for this long fails; until then timed-out reads are retried with smaller calls
        Option("stall_timeout", float, 60.0, positive),
        Option("service_timeout", float, 5.0, positive),  # wait for MAVROS's services / its first /state
        # the lease's resource is vehicle:<vehicle>; give a `mavlink` source for the same vehicle the same name
        Option("vehicle", str, "1"),
        Option("lock_wait", float, 120.0, not_negative),
    ]

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        if not self.options["vehicle"]:
            raise ConfigError(f"{key}.vehicle: must not be empty")
        self.root = posixpath.normpath(self.options["root"])
        self.lock_name = f"vehicle:{self.options['vehicle']}"
        self._lock = threading.RLock()  # finder and downloader may share this object in one process
        self._previous_sizes = {}
        self._ros = None  # (rospy, srv module, {name: ServiceProxy}) once connected
        self._state = None  # the last mavros_msgs/State
        self._state_time = 0.0
        self._subscriber = None
        # an open or close of ours timed out: the vehicle may still hold a session MAVROS has forgotten
        self._session_unsure = False

    # ----- ROS plumbing -----

    def _connect(self):
        """Import rospy and mavros_msgs, init a node if this process has none, and make the service proxies."""
        if self._ros is not None:
            return self._ros
        try:
            import rospy
            from mavros_msgs import srv
            from mavros_msgs.msg import State
            from std_srvs.srv import Empty
        except ImportError as error:
            raise ConfigError(f"{self.key}.kind: the mavros source needs rospy and mavros_msgs ({error})") from None
        if not rospy.core.is_initialized():
            rospy.init_node(f"filesync_{self.name}", anonymous=True, disable_signals=True)
        namespace = self.options["namespace"]
        types = {"list": srv.FileList, "open": srv.FileOpen, "read": srv.FileRead, "close": srv.FileClose,
                 "checksum": srv.FileChecksum, "remove": srv.FileRemove, "reset": Empty}
        proxies = {name: rospy.ServiceProxy(f"{namespace}/ftp/{name}", kind) for name, kind in types.items()}
        self._subscriber = rospy.Subscriber(f"{namespace}/state", State, self._on_state, queue_size=1)
        self._ros = (rospy, srv, proxies)
        return self._ros

    def _on_state(self, message):
        self._state, self._state_time = message, time.monotonic()

    def _wait_services(self):
        rospy, _, proxies = self._connect()
        try:
            proxies["list"].wait_for_service(self.options["service_timeout"])
        except rospy.ROSException:
            raise DeviceUnavailable(f"MAVROS's FTP services ({self.options['namespace']}/ftp/list) are not "
                                    f"offered within {self.options['service_timeout']:g} s: is MAVROS running "
                                    "with its ftp plugin?") from None

    def _call(self, name, what, *args):
        """Call service `name`; retry Busy (the call fails) and ETIMEDOUT; return the response (success or not)."""
        rospy, _, proxies = self._connect()
        response = None
        for _ in range(self.options["retries"]):
            try:
                response = proxies[name](*args)
            except rospy.ServiceException as error:
                if self._service_gone(name):
                    raise DeviceUnavailable(f"{what}: MAVROS's {self.options['namespace']}/ftp/{name} "
                                            "service went away") from None
                last = f"{what}: MAVROS refused the call ({error}): busy with another request, or it does not " \
                       "hold the file open"
                time.sleep(self.options["retry_wait"])
                continue
            if response.success or response.r_errno != errno.ETIMEDOUT:
                return response
            last = f"{what}: MAVROS timed out (r_errno 110, ETIMEDOUT) and does not retry by itself"
        if response is not None and not response.success:
            return response
        raise TransientError(f"{last}; gave up after {self.options['retries']} tries")

    def _service_gone(self, name) -> bool:
        rospy, _, proxies = self._connect()
        try:
            proxies[name].wait_for_service(0.5)
            return False
        except rospy.ROSException:
            return True

    def _vehicle(self):
        """Hold this object's lock and the vehicle's lease; yields the lease (None without a lock service)."""
        return exclusive(self._lock, self.context, self.lock_name, self.options["lock_wait"])

    def _armed(self) -> bool:
        """True when reads must wait: wait_disarmed is set and /state says armed. No /state: DeviceUnavailable."""
        if not self.options["wait_disarmed"]:
            return False
        self._connect()
        timeout = self.options["service_timeout"]
        deadline = time.monotonic() + timeout
        while True:
            state, fresh = self._state, time.monotonic() - self._state_time <= timeout
            if state is not None and fresh and state.connected:
                return bool(state.armed)
            if time.monotonic() >= deadline:
                if state is None or not fresh:
                    raise DeviceUnavailable(f"no {self.options['namespace']}/state from MAVROS within {timeout:g} s")
                raise DeviceUnavailable(f"MAVROS ({self.options['namespace']}) is not connected to the vehicle")
            time.sleep(0.05)

    def _remote(self, path: str) -> str:
        return posixpath.join(self.root, path) if path else self.root

    def _included(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.options["include"])

    def _list_directory(self, relative: str) -> Optional[list]:
        """The entries of a folder under root, or None when it does not exist."""
        remote = self._remote(relative)
        response = self._call("list", f"list {remote}", remote)
        if response.success:
            return response.list
        if response.r_errno in _MISSING:
            return None
        raise TransientError(f"list {remote}: MAVROS failed with r_errno {response.r_errno} "
                             f"({errno.errorcode.get(response.r_errno, '?')})")

    def _walk(self) -> List[tuple]:
        found, pending = [], [""]
        while pending:
            relative = pending.pop()
            entries = self._list_directory(relative)
            for entry in entries or ():
                if entry.name in (".", ".."):
                    continue
                path = posixpath.join(relative, entry.name) if relative else entry.name
                if entry.type == entry.TYPE_DIRECTORY:
                    pending.append(path)
                elif self._included(entry.name):
                    found.append((path, entry.size))
        return sorted(found)

    def _listed_size(self, path: str) -> Optional[int]:
        folder, name = posixpath.split(path)
        for entry in self._list_directory(folder) or ():
            if entry.name == name and entry.type == entry.TYPE_FILE:
                return entry.size
        return None

    def _gone(self, path: str) -> Vanished:
        return Vanished(f"{self._remote(path)}: no longer on the vehicle (removed or renamed after it was "
                              "listed)")

    def _close(self, remote: str):
        """Close `remote` in MAVROS; it may not hold it open (the call then fails), which is fine."""
        rospy, _, proxies = self._connect()
        try:
            response = proxies["close"](remote)
        except rospy.ServiceException:
            return
        if not response.success and response.r_errno == errno.ETIMEDOUT:
            # MAVROS forgets the file before the vehicle answers: if the request was lost the session stays open
            self._session_unsure = True

    def _open(self, path: str) -> int:
        """Open the file through MAVROS and return its size. A timed-out open may have opened it: close, retry."""
        remote = self._remote(path)
        rospy, _, proxies = self._connect()
        for _ in range(self.options["retries"]):
            try:
                response = proxies["open"](remote, 0)  # MODE_READ
            except rospy.ServiceException:  # busy, or MAVROS holds it open from an earlier call: close it
                time.sleep(self.options["retry_wait"])
                self._close(remote)
                continue
            if response.success:
                self._session_unsure = False
                return response.size
            if response.r_errno == errno.ETIMEDOUT:
                # the request or its reply was lost, or the reply came before MAVROS waited for it: then the file
                # is open in MAVROS (close it) or only on the vehicle (a reset frees it, see EMFILE)
                self._session_unsure = True
                self._close(remote)
                continue
            if response.r_errno in _MISSING and self._listed_size(path) is None:
                raise self._gone(path)
            if response.r_errno == errno.EMFILE:
                if self._session_unsure:  # most likely our own session, whose open or close reply was lost
                    proxies["reset"]()  # MAVROS does not wait for its answer: it may be lost too; try again
                    continue
                raise TransientError(f"open {remote}: the vehicle refused an FTP session (NoSessionsAvailable): "
                                     "another client (QGroundControl, a `mavlink` source) holds it")
            raise FileError(f"open {remote}: MAVROS failed with r_errno {response.r_errno} "
                            f"({errno.errorcode.get(response.r_errno, '?')})")
        # still failing: a session MAVROS lost track of may be holding the vehicle's only one
        proxies["reset"]()
        self._session_unsure = False
        raise TransientError(f"open {remote}: MAVROS kept failing (busy or timed out) in "
                             f"{self.options['retries']} tries; reset its FTP sessions")

    # ----- Source -----

    def probe(self):
        """Raise DeviceUnavailable unless MAVROS offers its FTP services (and /state, when waiting for disarm)."""
        with self._lock:
            self._wait_services()
            self._armed()

    def list(self) -> Iterator[RemoteFile]:
        """Every included file under root, relative to it; nothing while the vehicle is armed."""
        with self._vehicle():
            self._wait_services()
            if self._armed():
                return iter(())
            files = self._walk()
        settle = self.options["settle"]
        listing = [RemoteFile(path, size, log_time(path), not settle or self._previous_sizes.get(path) == size)
                   for path, size in files]
        self._previous_sizes = dict(files)
        return iter(listing)

    def stat(self, path: str) -> RemoteFile:
        """The file's size as its folder's listing gives it; PermanentError if it is gone."""
        with self._vehicle():
            size = self._listed_size(path)
        if size is None:
            raise self._gone(path)
        return RemoteFile(path, size, log_time(path), True)

    def read(self, path: str, offset: int) -> Iterator[bytes]:
        """Yield the file's bytes from `offset` on in calls of at most chunk_bytes; the file is closed however this
        ends. Timed-out calls (a lost packet: MAVROS never resends) are retried with smaller calls until stall_timeout
        passes without a byte."""
        remote = self._remote(path)
        with self._vehicle() as lease:
            self._wait_services()
            if self._armed():
                raise TransientError(f"{path}: the vehicle is armed; logs are read after it disarms")
            size = self._open(path)
            try:
                if offset > size:
                    raise FileError(f"{path}: asked to resume at byte {offset} but the vehicle's file has {size} "
                                    "bytes")
                # Call size in 239-byte round trips, sized as TCP sizes its window: one lost packet fails a
                # whole call and costs its full timeout (200 ms per round trip), so after a timeout calls start
                # again at one round trip, double up to half the size that failed, then grow by one.
                most = self.options["chunk_bytes"] // MAX_DATA
                units, threshold = 1, most
                progress_time = time.monotonic()
                while offset < size:
                    if lease is not None and lease.lost.is_set():
                        raise TransientError(f"{path}: lost the lease on {self.lock_name}")
                    if self.options["wait_disarmed"] and self._state is not None and self._state.armed:
                        raise TransientError(f"{path}: the vehicle armed during the download; it goes on after "
                                             "it disarms")
                    response = self._read_call(remote, offset, min(units * MAX_DATA - 1, size - offset))
                    if response is None:  # timed out: MAVROS lost a packet and never resends one
                        if time.monotonic() - progress_time > self.options["stall_timeout"]:
                            raise TransientError(f"{path}: no byte at offset {offset} for "
                                                 f"{self.options['stall_timeout']:g} s: MAVROS's reads keep timing "
                                                 "out (r_errno 110); a lossy link?")
                        units, threshold = 1, max(1, units // 2)
                        continue
                    if not response.success:
                        raise self._read_failed(path, response.r_errno, offset)
                    if not response.data:
                        raise MavrosEmptyRead(
                            f"{path}: MAVROS read 0 bytes at offset {offset} of {size}: the empty-read bug of MAVROS "
                            "<= 1.21.0 with PX4 >= v1.13 (it asks for 0 bytes); update MAVROS or use the `mavlink` "
                            "source (kind: mavlink, direct MAVLink FTP), which avoids it")
                    units = min(most, units * 2 if units < threshold else units + 1)
                    progress_time = time.monotonic()
                    offset += len(response.data)
                    yield bytes(response.data)
            finally:
                self._close(remote)

    def _read_call(self, remote, offset, wanted):
        """One /ftp/read call: its response, or None when it timed out. Busy refusals are retried after a pause."""
        rospy, _, proxies = self._connect()
        for _ in range(self.options["retries"]):
            try:
                response = proxies["read"](remote, offset, wanted)
            except rospy.ServiceException as error:
                if self._service_gone("read"):
                    raise DeviceUnavailable(f"read {remote}: MAVROS's {self.options['namespace']}/ftp/read "
                                            "service went away") from None
                refusal = error
                time.sleep(self.options["retry_wait"])
                continue
            if not response.success and response.r_errno == errno.ETIMEDOUT:
                return None
            return response
        raise TransientError(f"read {remote} at {offset}: MAVROS refused the call {self.options['retries']} times "
                             f"({refusal}): busy with another request, or it does not hold the file open")

    def _read_failed(self, path, r_errno, offset) -> Exception:
        if r_errno == errno.EBADFD:  # NAK InvalidSession: the vehicle dropped the session (idle, reset)
            return TransientError(f"{path}: the vehicle closed the FTP session at byte {offset}")
        if r_errno in _MISSING and self._listed_size(path) is None:
            return self._gone(path)
        return FileError(f"{path}: MAVROS read failed at byte {offset} with r_errno {r_errno} "
                         f"({errno.errorcode.get(r_errno, '?')})")

    def checksum(self, path: str) -> Optional[Checksum]:
        """The vehicle's CalcFileCRC32 of the file through /ftp/checksum (the MAVLink FTP CRC-32 variant)."""
        remote = self._remote(path)
        with self._vehicle():
            response = self._call("checksum", f"CRC of {remote}", remote)
            if response.success:
                return Checksum("mavftp-crc32", response.crc32)
            if response.r_errno == errno.ENOSYS:
                return None  # a server without CalcFileCRC32: the engine still checks the size
            if response.r_errno in _MISSING and self._listed_size(path) is None:
                raise self._gone(path)
        raise FileError(f"CRC of {remote}: MAVROS failed with r_errno {response.r_errno} "
                        f"({errno.errorcode.get(response.r_errno, '?')})")

    def delete(self, path: str) -> None:
        """Remove the log from the vehicle (only after every target verified it)."""
        remote = self._remote(path)
        with self._vehicle():
            response = self._call("remove", f"remove {remote}", remote)
            if not response.success and not (response.r_errno in _MISSING and self._listed_size(path) is None):
                raise FileError(f"remove {remote}: MAVROS failed with r_errno {response.r_errno}")

    def close(self):
        """Nothing to close: service proxies connect per call."""
