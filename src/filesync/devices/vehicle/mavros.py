"""Source and target `mavros`: files on a PX4 through MAVROS's FTP services (/mavros/ftp/*), when MAVROS owns the link.

MAVROS reads with sequential 239-byte ReadFile requests (no burst), does one operation at a time ("FTP: Busy": the
next call fails), never resends, and answers a timeout with r_errno 110: on a lossy link these devices retry, with
smaller calls after a timeout (each lost packet costs a whole call's timeout). Every FTP use holds the vehicle's
lease, shared with a `mavlink` source for the same vehicle through the option `vehicle`. The ROS calls are made by
filesync.ros.mavros_calls (MAVROS 1, rospy) or filesync.ros2.mavros_calls (MAVROS 2, rclpy), imported only when a
mavros device is used: the running filesync node's generation, else ROS_VERSION's, else the one installed.
MAVROS 2 keeps the services' names and answers, but a refused call (busy, a file already open) aborts mavros_node
and is never answered: its call layer raises the same Refused after MAVROS's own wait, and the device then finds
MAVROS gone or restarted, as after a refusal from MAVROS 1.

What is wrong for every file is a state of the device, not of a file (DeviceUnavailable / DeviceFault: the worker
waits and probes, no attempt is counted):
- MAVROS up to 1.21.0 asks PX4 >= v1.13 for 0 bytes per read and gets them: DeviceFault, named, probed again with a
  1-byte read (at once when MAVROS restarts, else after a growing pause).
- The vehicle has one FTP session. A mavros_node that was killed leaves its session open on the vehicle (MAVROS
  forgets it) and a client's listings keep it alive. When MAVROS restarted (its services went away or came back
  from another process) or one of our own opens or closes timed out, the session is ours: a refused open resets the
  vehicle's sessions at once. Any other refusal that lasts `session_idle` seconds (the vehicle's own idle timeout,
  so a session of a client that died would have ended by itself), while filesync holds the vehicle's lease, resets
  them too. Recovery therefore takes at most about `session_idle` plus the worker's probe interval.
"""
import errno
import fnmatch
import importlib
import posixpath
import threading
import time
from typing import Iterator, List, Optional

from filesync.devices.base import Checksum, RemoteFile, Source, Target, digest_text
from filesync.devices.vehicle.mavlink import LOG_SOURCE_OPTIONS, TARGET_ROOT_OPTION, log_time
from filesync.errors import (ConfigError, DeviceFault, DeviceUnavailable, FileError, FinalNameTaken, PermanentError,
                             StartOver, TransientError, UnsafePath, Vanished)
from filesync.lock import exclusive
from filesync.options import Option, not_negative, positive
from filesync.ros_common.generation import running_generation

MAX_DATA = 239  # bytes per ReadFile/WriteFile: a call of N bytes takes N/239 round trips through MAVROS
# MAVROS reads on while a reply carries a full 239 bytes, so a call for k * 239 bytes costs k + 1 round trips and one
# for k * 239 - 1 bytes costs k: reads ask for the latter.
_MISSING = (0, errno.ENOENT)  # MAVROS 1.x leaves r_errno 0 for NAK FileNotFound, which it does not know
MODE_READ, MODE_WRITE, MODE_CREATE = 0, 1, 2  # mavros_msgs/FileOpen
EMPTY_READ = ("MAVROS <= 1.21.0 reads 0 bytes from this vehicle; use the `mavlink` source or a MAVROS with the fix "
              "(mavros PR 2179)")
FAULT_RECHECK_FIRST = 15.0  # seconds before the empty-read bug is probed again; doubles up to fault_recheck


def _namespace(value):
    return None if value.startswith("/") and not value.endswith("/") else \
        f"must be an absolute ROS namespace like /mavros, got {value!r}"


def _chunk(value):
    return None if MAX_DATA <= value <= 1 << 20 else f"must be from {MAX_DATA} to {1 << 20} bytes, got {value}"


def _errno_text(r_errno) -> str:
    return f"r_errno {r_errno} ({errno.errorcode.get(r_errno, '?')})"


# How long MAVROS 1.x waits for the vehicle before it answers ETIMEDOUT (ftp.cpp): per call, or per 239 bytes + 1
_WAITS = {"list": 5.0, "checksum": 5.0, "open": 0.2, "close": 0.2, "remove": 0.2, "rename": 0.2, "mkdir": 0.2}
_WAIT_PER_CHUNK = 0.2


def _rw_wait(size) -> float:
    """How long MAVROS waits for a read or write of `size` bytes."""
    return _WAIT_PER_CHUNK * (size // MAX_DATA + 1)


def _timed_out(name, response, started, size=0) -> bool:
    """True when `response` is a real timeout. MAVROS keeps r_errno from its last failure and leaves it unchanged
    for a NAK code it does not know (FileNotFound, FileExists, FileProtected): after a timeout such a NAK answers
    ETIMEDOUT too, but at once. Such a response gets r_errno 0, as MAVROS gives after a success."""
    if response.success or response.r_errno != errno.ETIMEDOUT:
        return False
    wait = _WAITS.get(name) or _rw_wait(size)
    if time.monotonic() - started >= 0.9 * wait:
        return True
    response.r_errno = 0
    return False


class MavrosEmptyRead(DeviceFault):
    """MAVROS answered a read before the end of the file with success and no data (the bug of MAVROS <= 1.21.0)."""


class MavrosFailed(FileError):
    """A MAVROS call answered success=False with `r_errno` (kept, so each device can say what it means for it)."""

    def __init__(self, message, r_errno):
        super().__init__(message)
        self.r_errno = r_errno


class SessionsTaken(DeviceUnavailable):
    """The vehicle refuses an FTP session (NAK NoSessionsAvailable): no file can be opened until it frees one."""


class _MavrosDevice:
    """What the mavros source and target share: the ROS call layer, calls that retry Busy and ETIMEDOUT, MAVROS's
    restarts, the vehicle's /state and lease, and opening files within the vehicle's one FTP session."""

    max_transfers = 1
    max_transfers_reason = "the vehicle serves one MAVLink FTP session"

    COMMON_OPTIONS = [
        Option("namespace", str, "/mavros", _namespace,
               help="MAVROS's ROS namespace, whose ftp/* services and state topic are used."),
        # MAVROS takes about 200 ms per 239 bytes
        Option("chunk_bytes", int, 64 * MAX_DATA, _chunk,
               help="Most bytes per read or write service call (MAVROS moves 239 bytes per MAVLink message); smaller "
                    "calls follow a timeout."),
        Option("retries", int, 10, positive,
               help="Tries of one service call that MAVROS answers Busy or ETIMEDOUT."),
        Option("retry_wait", float, 0.2, not_negative,
               help="Seconds to pause before retrying a call MAVROS refused as busy."),
        Option("service_timeout", float, 5.0, positive,
               help="Seconds to wait for MAVROS's services and its first state message before MAVROS counts as "
                    "unreachable."),
        Option("wait_disarmed", bool, True,
               help="true: touch no file while the vehicle is armed (from MAVROS's state topic)."),
        # the vehicle's FTP session idle timeout (PX4: 10 s, newer 30 s): a refusal lasting longer resets sessions
        Option("session_idle", float, 31.0, not_negative,
               help="Seconds a refused FTP session may last, while filesync holds the vehicle's lease, before it "
                    "resets the vehicle's sessions (the vehicle's own idle timeout: PX4 10 s, newer 30 s)."),
        # the lease's resource is vehicle:<vehicle>; give a `mavlink` source for the same vehicle the same name
        Option("vehicle", str, "1",
               help="Name of the vehicle; its lease (vehicle:<vehicle>) is shared with a mavlink device naming the "
                    "same vehicle, so their FTP use never overlaps."),
        Option("lock_wait", float, 120.0, not_negative,
               help="Seconds to wait for the vehicle's lease while another device or process uses the vehicle's one "
                    "FTP session."),
    ]

    def _setup(self):
        if not self.options["vehicle"]:
            raise ConfigError(f"{self.key}.vehicle: must not be empty")
        self.root = posixpath.normpath(self.options["root"])
        self.lock_name = f"vehicle:{self.options['vehicle']}"
        self._lock = threading.RLock()  # threads of one process may share this object
        self._ros = None  # (the call layer's module, its MavrosCalls) once connected
        self._state = None  # the last mavros_msgs/State
        self._state_time = 0.0
        self._provider = None  # who offers MAVROS's FTP services, as last seen (the call layer's provider())
        # the vehicle may hold a session MAVROS has forgotten: an open or close of ours timed out, or MAVROS restarted
        self._session_unsure = False
        self._refused_since = None  # when the vehicle began refusing us a session (monotonic), None while it gives one

    # ----- ROS plumbing -----

    def _connect(self):
        """Import the call layer of the ROS generation in use and make its clients (and a node if need be)."""
        if self._ros is not None:
            return self._ros
        generation = running_generation(self.context)
        client_library = "rospy" if generation == "1" else "rclpy"
        try:
            layer = importlib.import_module("filesync.ros.mavros_calls" if generation == "1" else
                                            "filesync.ros2.mavros_calls")
        except ImportError as error:
            raise ConfigError(f"{self.key}.kind: the mavros {self.ROLE} needs {client_library} and mavros_msgs "
                              f"({error})") from None
        calls = layer.MavrosCalls(self.name, self.options["namespace"], self._on_state, self.context)
        self._ros = (layer, calls)
        return self._ros

    def _on_state(self, message):
        self._state, self._state_time = message, time.monotonic()

    def _service(self, name) -> str:
        return f"{self.options['namespace']}/ftp/{name}"

    def _note_provider(self) -> bool:
        """Look up who offers the services; True (and the session counts as unsure) when MAVROS restarted."""
        _, calls = self._connect()
        current = calls.provider()
        restarted = current is not None and self._provider is not None and current != self._provider
        if current is not None:
            self._provider = current
        if restarted:
            # whatever the old mavros_node held open on the vehicle stays open there, forgotten by the new one
            self._session_unsure = True
            self._on_restart()
        return restarted

    def _on_restart(self):
        """MAVROS was started again (perhaps another version): subclasses re-check what they know of it."""

    def _wait_services(self):
        _, calls = self._connect()
        if not calls.offered("list", self.options["service_timeout"]):
            raise DeviceUnavailable(f"MAVROS's FTP services ({self._service('list')}) are not offered within "
                                    f"{self.options['service_timeout']:g} s: is MAVROS running with its ftp "
                                    "plugin?")
        self._note_provider()

    def _went_away(self, name, what) -> Optional[DeviceUnavailable]:
        """After a refused call: the DeviceUnavailable to raise when MAVROS went away or was restarted, else None."""
        _, calls = self._connect()
        if not calls.offered(name, 0.5):
            self._session_unsure = True  # what it held open on the vehicle stays open there
            self._provider = None
            return DeviceUnavailable(f"{what}: MAVROS's {self._service(name)} service went away (mavros_node "
                                     "stopped or restarting)")
        if self._note_provider():
            return DeviceUnavailable(f"{what}: MAVROS was restarted (a new mavros_node offers "
                                     f"{self._service(name)}); it no longer holds our file open")
        return None

    def _call(self, name, what, *args):
        """Call service `name`; retry Busy (the call fails) and ETIMEDOUT; return the response (success or not)."""
        layer, calls = self._connect()
        response, last = None, ""
        for _ in range(self.options["retries"]):
            started = time.monotonic()
            try:
                response = calls.call(name, *args, wait=_WAITS.get(name, 0.0))
            except layer.Refused as error:
                gone = self._went_away(name, what)
                if gone is not None:
                    raise gone from None
                last = f"{what}: MAVROS refused the call ({error}): busy with another request, or it does not " \
                       "hold the file open"
                time.sleep(self.options["retry_wait"])
                continue
            if not _timed_out(name, response, started):
                return response
            last = f"{what}: MAVROS timed out (r_errno 110, ETIMEDOUT) and does not retry by itself"
        if response is not None and not response.success:
            return response
        raise TransientError(f"{last}; gave up after {self.options['retries']} tries")

    def _vehicle(self):
        """Hold this object's lock and the vehicle's lease; yields the lease (None without a lock service)."""
        return exclusive(self._lock, self.context, self.lock_name, self.options["lock_wait"])

    def _vehicle_armed(self) -> bool:
        """Whether /state says the vehicle is armed. No fresh /state, or not connected: DeviceUnavailable."""
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

    def _armed(self) -> bool:
        """True when transfers must wait: wait_disarmed is set and /state says armed."""
        return self.options["wait_disarmed"] and self._vehicle_armed()

    def _remote(self, path: str) -> str:
        remote = posixpath.join(self.root, path) if path else self.root
        if len(remote.encode("utf-8")) >= MAX_DATA:  # MAVROS would cut it to 238 bytes: another file's name
            raise UnsafePath(f"{remote[:60]}...: longer than the {MAX_DATA - 1} bytes a MAVLink FTP request carries")
        return remote

    def _list_remote(self, remote: str) -> Optional[list]:
        """The entries of the vehicle's folder `remote`, or None when it does not exist."""
        response = self._call("list", f"list {remote}", remote)
        if response.success:
            return response.list
        if response.r_errno in _MISSING:
            return None
        raise TransientError(f"list {remote}: MAVROS failed with {_errno_text(response.r_errno)}")

    def _remote_size(self, remote: str) -> Optional[int]:
        """The size of the file `remote` as its folder's listing gives it; None when there is no such file."""
        folder, name = posixpath.split(remote)
        for entry in self._list_remote(folder) or ():
            if entry.name == name and entry.type == entry.TYPE_FILE:
                return entry.size
        return None

    def _close(self, remote: str):
        """Close `remote` in MAVROS; it may not hold it open (the call then fails), which is fine."""
        layer, calls = self._connect()
        started = time.monotonic()
        try:
            response = calls.call("close", remote, wait=_WAITS["close"])
        except layer.Refused:
            return
        if _timed_out("close", response, started):
            # MAVROS forgets the file before the vehicle answers: if the request was lost the session stays open
            self._session_unsure = True

    def _reset_sessions(self, why):
        layer, calls = self._connect()
        calls.warn(f"{self.name}: resetting the vehicle's FTP sessions through {self._service('reset')}: {why}")
        try:
            calls.call("reset")  # MAVROS does not wait for the answer: the next open tells whether it worked
        except layer.Refused:
            pass
        self._session_unsure = False
        time.sleep(self.options["retry_wait"])  # MAVROS counts as busy until the reset's ACK is back

    def _refused(self, remote, reset) -> Optional[Exception]:
        """The vehicle refused a session (NoSessionsAvailable) for `remote`: reset the vehicle's sessions and return
        None (try again) when they are ours or the refusal has outlasted session_idle, else the error to raise."""
        now = time.monotonic()
        if self._refused_since is None:
            self._refused_since = now
        lasted = now - self._refused_since
        if reset and self._session_unsure:
            self._reset_sessions("MAVROS restarted or an open/close of ours timed out, leaving a session it forgot")
            return None
        if reset and lasted >= self.options["session_idle"]:
            self._reset_sessions(f"NoSessionsAvailable for {lasted:.0f} s, longer than the vehicle's idle timeout "
                                 f"({self.options['session_idle']:g} s), while filesync holds {self.lock_name}")
            return None
        holder = "another client (QGroundControl?) or a session a restarted MAVROS left" if self.context \
            and self.context.lock is not None else "another client (QGroundControl, a `mavlink` source without " \
            "the same `vehicle`) or a session a restarted MAVROS left"
        return SessionsTaken(f"open {remote}: the vehicle refuses an FTP session (NoSessionsAvailable) for "
                             f"{lasted:.0f} s: held by {holder}; filesync resets the vehicle's FTP sessions after "
                             f"{self.options['session_idle']:g} s")

    def _open(self, remote: str, mode: int, missing=None) -> int:
        """Open `remote` in `mode` through MAVROS and return the size it answers. A timed-out open may have opened
        the file: close, retry. `missing()` gives the error for a failure that may mean the file is gone."""
        layer, calls = self._connect()
        resets = 0
        for _ in range(self.options["retries"]):
            started = time.monotonic()
            try:
                response = calls.call("open", remote, mode, wait=_WAITS["open"])
            except layer.Refused:  # busy, or MAVROS holds it open from an earlier call: close it
                gone = self._went_away("open", f"open {remote}")
                if gone is not None:
                    raise gone from None
                time.sleep(self.options["retry_wait"])
                self._close(remote)
                continue
            if response.success:
                self._session_unsure = False
                self._refused_since = None
                return response.size
            if _timed_out("open", response, started):
                # the request or its reply was lost, or the reply came before MAVROS waited for it: then the file
                # is open in MAVROS (close it) or only on the vehicle (a reset frees it, see EMFILE)
                self._session_unsure = True
                self._close(remote)
                continue
            if response.r_errno == errno.EMFILE:
                problem = self._refused(remote, reset=resets < 2)
                if problem is not None:
                    raise problem
                resets += 1
                continue
            self._refused_since = None
            if response.r_errno in _MISSING and missing is not None:
                problem = missing()
                if problem is not None:
                    raise problem
            if response.r_errno == errno.ENOSPC:
                raise TransientError(f"open {remote}: the vehicle's storage is full (ENOSPC)")
            raise MavrosFailed(f"open {remote}: MAVROS failed with {_errno_text(response.r_errno)}", response.r_errno)
        # still failing: a session MAVROS lost track of may be holding the vehicle's only one
        self._reset_sessions(f"open {remote} kept failing (busy or timed out) in {self.options['retries']} tries")
        raise TransientError(f"open {remote}: MAVROS kept failing (busy or timed out) in "
                             f"{self.options['retries']} tries; reset its FTP sessions")

    def _probe_services(self):
        """Raise DeviceUnavailable unless MAVROS offers its FTP services (and /state, when waiting for disarm)."""
        self._wait_services()
        if self.options["wait_disarmed"]:
            self._vehicle_armed()

    def _probe_session(self):
        """While the vehicle refused us a session: try to get one (resetting as _refused allows) and give it back."""
        remote = self._refused_remote
        if remote is None:
            return
        with self._vehicle():
            try:
                self._open(remote, MODE_READ, missing=lambda: Vanished(remote))
            except Vanished:
                pass
            else:
                self._close(remote)
        self._refused_remote = None

    def close(self):
        """Nothing to close: the call layer's clients connect per call."""


class MavrosSource(_MavrosDevice, Source):
    """Files under `root` on the vehicle, listed and read through MAVROS's FTP services in `namespace`."""

    kind = "mavros"
    ROLE = "source"
    can_delete = True
    checksum_algorithm = "mavftp-crc32"
    OPTIONS = _MavrosDevice.COMMON_OPTIONS + LOG_SOURCE_OPTIONS + [
        # a read that gets no byte for this long fails; until then timed-out reads are retried with smaller calls
        Option("stall_timeout", float, 60.0, positive,
               help="Seconds a read may get no byte before it fails; until then timed-out reads are retried with "
                    "smaller calls."),
        # longest pause between checks whether the empty-read bug is still there (a MAVROS restart checks at once)
        Option("fault_recheck", float, 600.0, positive,
               help="Longest pause in seconds between checks whether MAVROS's empty-read bug is still there (a MAVROS"
                    " restart checks at once)."),
    ]

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        self._setup()
        self._previous_sizes = {}
        self._refused_remote = None  # a file the vehicle refused us a session for: probe() tries it again
        self._fault = None  # (relative path, reason) while the empty-read bug is seen
        self._fault_wait = FAULT_RECHECK_FIRST
        self._fault_due = 0.0

    def _included(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.options["include"])

    def _walk(self) -> List[tuple]:
        found, pending = [], [""]
        while pending:
            relative = pending.pop()
            entries = self._list_remote(self._remote(relative))
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
        return self._remote_size(self._remote(path))

    def _gone(self, path: str) -> Vanished:
        return Vanished(f"{self._remote(path)}: no longer on the vehicle (removed or renamed after it was listed)")

    def _missing(self, path):
        return lambda: self._gone(path) if self._listed_size(path) is None else None

    def _open_file(self, path: str) -> int:
        remote = self._remote(path)
        try:
            return self._open(remote, MODE_READ, missing=self._missing(path))
        except SessionsTaken:
            self._refused_remote = remote
            raise

    def _on_restart(self):
        self._fault_due = 0.0  # perhaps a MAVROS with the fix: check now

    # ----- Source -----

    def probe(self):
        """Raise DeviceUnavailable unless MAVROS offers its FTP services (and /state, when waiting for disarm);
        while the vehicle refused a session, try for one; while the empty-read bug was seen, DeviceFault unless a
        1-byte read (now and then, at once after a MAVROS restart) shows it gone."""
        with self._lock:
            self._probe_services()
            self._probe_session()
            self._probe_fault()

    def _probe_fault(self):
        if self._fault is None:
            return
        path, reason = self._fault
        if time.monotonic() < self._fault_due:
            raise MavrosEmptyRead(reason)
        remote = self._remote(path)
        with self._vehicle():
            try:
                size = self._open_file(path)
            except Vanished:
                self._fault = None  # nothing left to test with: the next read tells
                return
            try:
                response = self._read_call(remote, 0, 1) if size else None
            finally:
                self._close(remote)
        if response is not None and response.success and not response.data:
            self._fault_due = time.monotonic() + self._fault_wait
            self._fault_wait = min(self._fault_wait * 2, self.options["fault_recheck"])
            raise MavrosEmptyRead(reason)
        self._fault, self._fault_wait = None, FAULT_RECHECK_FIRST

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
        """The file's size as its folder's listing gives it; Vanished if it is gone."""
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
            size = self._open_file(path)
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
                        reason = f"{EMPTY_READ}: {path} read 0 bytes at byte {offset} of {size}"
                        self._fault, self._fault_due = (path, reason), time.monotonic() + self._fault_wait
                        raise MavrosEmptyRead(reason)
                    units = min(most, units * 2 if units < threshold else units + 1)
                    progress_time = time.monotonic()
                    offset += len(response.data)
                    yield bytes(response.data)
            finally:
                self._close(remote)

    def _read_call(self, remote, offset, wanted):
        """One /ftp/read call: its response, or None when it timed out. Busy refusals are retried after a pause."""
        layer, calls = self._connect()
        refusal = None
        for _ in range(self.options["retries"]):
            started = time.monotonic()
            try:
                response = calls.call("read", remote, offset, wanted, wait=_rw_wait(wanted))
            except layer.Refused as error:
                gone = self._went_away("read", f"read {remote}")
                if gone is not None:
                    raise gone from None
                refusal = error
                time.sleep(self.options["retry_wait"])
                continue
            if _timed_out("read", response, started, wanted):
                return None
            return response
        raise TransientError(f"read {remote} at {offset}: MAVROS refused the call {self.options['retries']} times "
                             f"({refusal}): busy with another request, or it does not hold the file open")

    def _read_failed(self, path, r_errno, offset) -> Exception:
        if r_errno == errno.EBADFD:  # NAK InvalidSession: the vehicle dropped the session (idle, reset, reboot)
            return TransientError(f"{path}: the vehicle closed the FTP session at byte {offset}")
        if r_errno == errno.EBADF:  # MAVROS does not hold the file open (ftp.cpp answers so): it was restarted
            self._session_unsure = True
            return TransientError(f"{path}: MAVROS no longer holds the file open at byte {offset} (restarted?)")
        if r_errno in _MISSING and self._listed_size(path) is None:
            return self._gone(path)
        return FileError(f"{path}: MAVROS read failed at byte {offset} with {_errno_text(r_errno)}")

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
        raise FileError(f"CRC of {remote}: MAVROS failed with {_errno_text(response.r_errno)}")

    def delete(self, path: str) -> None:
        """Remove the log from the vehicle (the engine calls it only after every target verified this version and
        the vehicle's CRC still matched); never while the vehicle is armed."""
        remote = self._remote(path)
        with self._vehicle():
            self._wait_services()
            if self._vehicle_armed():
                raise TransientError(f"remove {remote}: the vehicle is armed; logs are removed after it disarms")
            response = self._call("remove", f"remove {remote}", remote)
            if response.success:
                return
            size = self._listed_size(path)
        if size is None:
            return  # gone: counts as removed
        if response.r_errno in _MISSING:
            raise PermanentError(f"remove {remote}: the vehicle refused (MAVROS 1.x gives r_errno 0 for NAK "
                                 "FileProtected and other codes it does not map); the log stays on the vehicle")
        raise FileError(f"remove {remote}: MAVROS failed with {_errno_text(response.r_errno)}")


class MavrosTarget(_MavrosDevice, Target):
    """Files written under `root` on the vehicle through MAVROS's FTP services: <name>.part written from what it holds
    (CreateFile from byte 0, OpenFileWO to go on), renamed to its final name, verified by the vehicle's CRC-32."""

    kind = "mavros"
    ROLE = "target"
    resumable = True
    verifiable = True
    digests = ("mavftp-crc32",)
    can_delete = True
    OPTIONS = _MavrosDevice.COMMON_OPTIONS + [TARGET_ROOT_OPTION]

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        self._setup()
        self._refused_remote = None
        self._folders = set()  # folders known to exist on the vehicle
        self._timed_out = False  # a write call of the current upload timed out

    def probe(self):
        """Raise DeviceUnavailable unless MAVROS offers its FTP services and (with wait_disarmed) the vehicle is
        disarmed; while the vehicle refused a session, try for one."""
        with self._lock:
            self._probe_services()
            if self._armed():
                raise DeviceUnavailable("the vehicle is armed; files are written to it after it disarms")
            self._probe_session()

    def location(self, path: str) -> str:
        return f"{self.options['namespace']}:{self._remote(path)}"

    def stat(self, path: str) -> Optional[int]:
        with self._vehicle():
            self._wait_services()
            return self._remote_size(self._remote(path))

    def digest(self, path: str, algorithm: str) -> str:
        if algorithm != "mavftp-crc32":
            raise PermanentError(f"target {self.name} ({self.kind}) computes no {algorithm}")
        remote = self._remote(path)
        with self._vehicle():
            response = self._call("checksum", f"CRC of {remote}", remote)
            if response.success:
                return digest_text(response.crc32)
            if response.r_errno in _MISSING and self._remote_size(remote) is None:
                raise Vanished(f"{self.location(path)}: not on the vehicle")
        raise FileError(f"CRC of {remote}: MAVROS failed with {_errno_text(response.r_errno)}")

    def held(self, path: str, note: str = "") -> int:
        with self._vehicle():
            self._wait_services()
            return self._remote_size(self._remote(self.part_name(path))) or 0

    def discard(self, path: str) -> None:
        with self._vehicle():
            self._remove(self._remote(self.part_name(path)))

    def delete(self, path: str) -> None:
        with self._vehicle():
            self._remove(self._remote(path))

    def _remove(self, remote):
        """Remove `remote` from the vehicle; a file already gone counts as removed."""
        response = self._call("remove", f"remove {remote}", remote)
        if response.success or self._remote_size(remote) is None:
            return
        if response.r_errno in _MISSING:
            raise PermanentError(f"remove {remote}: the vehicle refused (MAVROS 1.x gives r_errno 0 for NAK "
                                 "FileProtected and other codes it does not map)")
        raise FileError(f"remove {remote}: MAVROS failed with {_errno_text(response.r_errno)}")

    def _make_folders(self, folder):
        """Create `folder` and its missing parents on the vehicle (MAVLink FTP's CreateDirectory makes one)."""
        missing = []
        while folder not in self._folders and folder != "/" and self._list_remote(folder) is None:
            missing.append(folder)
            folder = posixpath.dirname(folder)
        self._folders.add(folder)
        for folder in reversed(missing):
            response = self._call("mkdir", f"create folder {folder}", folder)
            if not response.success and self._list_remote(folder) is None:  # not made by an earlier try either
                raise self._write_error(f"create folder {folder}", response.r_errno)
            self._folders.add(folder)

    def _write_error(self, what, r_errno) -> Exception:
        if r_errno == errno.ENOSPC:
            return TransientError(f"{what}: the vehicle's storage is full (NAK FailErrno ENOSPC); the upload goes "
                                  "on when there is room")
        if r_errno in (errno.EBADFD, errno.EBADF):
            return TransientError(f"{what}: the vehicle or MAVROS closed the FTP session (rebooted or restarted?); "
                                  "the upload goes on from what the vehicle holds")
        if r_errno in _MISSING:
            return PermanentError(f"{what}: the vehicle refused (MAVROS 1.x gives r_errno 0 for NAK FileProtected "
                                  "and other codes it does not map)")
        if r_errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return PermanentError(f"{what}: the vehicle refused with {_errno_text(r_errno)}")
        return FileError(f"{what}: MAVROS failed with {_errno_text(r_errno)}")

    def write(self, path, stream, offset, size, progress):
        """Write the bytes from `offset` to <path>.part on the vehicle in calls of at most chunk_bytes; a timed-out
        call is sent again (the same bytes at the same offset), smaller, as reads are."""
        remote = self._remote(self.part_name(path))
        with self._vehicle() as lease:
            self._wait_services()
            if self._armed():
                raise DeviceUnavailable("the vehicle is armed; files are written to it after it disarms")
            self._make_folders(posixpath.dirname(remote))
            try:
                self._open(remote, MODE_WRITE if offset else MODE_CREATE)
            except SessionsTaken:
                self._refused_remote = remote
                raise
            except MavrosFailed as error:
                raise self._write_error(f"open {remote} for writing", error.r_errno) from None
            try:
                if offset:
                    held = self._remote_size(remote) or 0
                    if held < offset:  # MAVSDK's OpenFileWO truncates (PX4's does not)
                        raise StartOver(f"{remote}: the vehicle emptied the file when it was opened to go on at byte "
                                        f"{offset}; sending it from byte 0")
                self._write_from(remote, stream, offset, size, progress, lease)
            finally:
                self._close(remote)

    def _write_from(self, remote, stream, offset, size, progress, lease):
        most = self.options["chunk_bytes"] // MAX_DATA
        units, threshold, failures = most, most, 0
        self._timed_out = False
        pending = b""
        while offset < size:
            if lease is not None and lease.lost.is_set():
                raise TransientError(f"{remote}: lost the lease on {self.lock_name}")
            if self.options["wait_disarmed"] and self._state is not None and self._state.armed:
                raise TransientError(f"{remote}: the vehicle armed during the upload; it goes on after it disarms")
            want = min(units * MAX_DATA, size - offset)
            if len(pending) < want:
                pending += stream.read(want - len(pending))
                if not pending:
                    raise TransientError(f"{remote}: the staged file ended at byte {offset} of {size}")
            data = pending[:want]
            response = self._write_call(remote, offset, data)
            if response is None:  # timed out: the same bytes again, in smaller calls
                self._timed_out = True
                failures += 1
                if failures >= self.options["retries"]:
                    raise TransientError(f"write {remote} at {offset}: MAVROS timed out (r_errno 110) "
                                         f"{failures} times in a row; a lossy link?")
                units, threshold = 1, max(1, units // 2)
                continue
            if not response.success:
                raise self._write_error(f"write {remote} at byte {offset}", response.r_errno)
            failures = 0
            pending = pending[len(data):]
            offset += len(data)
            units = min(most, units * 2 if units < threshold else units + 1)
            progress(offset)

    def _write_call(self, remote, offset, data):
        """One /ftp/write call: its response, or None when it timed out. Busy refusals are retried after a pause."""
        layer, calls = self._connect()
        refusal = None
        for _ in range(self.options["retries"]):
            started = time.monotonic()
            try:
                response = calls.call("write", remote, offset, data, wait=_rw_wait(len(data)))
            except layer.Refused as error:
                gone = self._went_away("write", f"write {remote}")
                if gone is not None:
                    raise gone from None
                if self._timed_out:
                    # the reply to the call that timed out came late: MAVROS answers such a reply with
                    # ResetSessions and forgets the file (ftp.cpp), so it will not take this one again
                    raise TransientError(f"write {remote} at {offset}: MAVROS no longer holds the file open (a late "
                                         "reply to a timed-out write makes it reset the vehicle's FTP sessions); "
                                         "the upload goes on from what the vehicle holds") from None
                refusal = error
                time.sleep(self.options["retry_wait"])
                continue
            if _timed_out("write", response, started, len(data)):
                return None
            return response
        raise TransientError(f"write {remote} at {offset}: MAVROS refused the call {self.options['retries']} "
                             f"times ({refusal}): busy with another request, or it does not hold the file open")

    def publish(self, path: str, size: int, replace: bool = False) -> str:
        """Rename <path>.part to `path` (MAVLink FTP's Rename replaces a file: unless `replace`, a taken final name
        raises FinalNameTaken first)."""
        final, part = self._remote(path), self._remote(self.part_name(path))
        with self._vehicle():
            self._wait_services()
            if not replace and self._remote_size(final) is not None:
                raise FinalNameTaken(f"{self.location(path)} already exists")
            response = self._call("rename", f"rename {part} to {final}", part, final)
            if not response.success:
                # a rename whose reply was lost (or MAVROS's early-reply race) may have happened all the same
                if self._remote_size(part) is None and self._remote_size(final) == size:
                    return self.location(path)
                if response.r_errno == errno.ENAMETOOLONG:
                    raise PermanentError(f"rename {part} to {final}: the two paths do not fit in one MAVLink FTP "
                                         "request (239 bytes)")
                raise self._write_error(f"rename {part} to {final}", response.r_errno)
        return self.location(path)

