"""MAVROS's FTP plugin (mavros/src/plugins/ftp.cpp) without ROS, for the test stand-ins of MAVROS 1
(fake_mavros.py, rospy) and MAVROS 2 (fake_mavros2.py, rclpy): what the plugin sends to the vehicle and how it turns
the replies into a service's answer, identical in both generations' ftp.cpp (their differences are in the stand-ins).
What it reproduces is listed at the top of fake_mavros.py."""
import errno
import os
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "..", "src")]

from filesync.devices.vehicle.mavftp import MavFtpClient  # noqa: E402
from filesync.devices.vehicle.mavftp_wire import MAX_DATA, Nak, Op  # noqa: E402

TYPE_FILE, TYPE_DIRECTORY = 0, 1  # mavros_msgs/FileEntry
MODE_READ, MODE_WRITE, MODE_CREATE = 0, 1, 2  # mavros_msgs/FileOpen
MAVROS_SYSTEM_ID, MAVROS_COMPONENT_ID = 1, 240  # MAVROS's defaults (system_id, component_id)
LIST_TIMEOUT, OPEN_TIMEOUT, CHUNK_TIMEOUT = 5.0, 0.2, 0.2
TRUNCATE_TIMEOUT = 5 * LIST_TIMEOUT
# opcodes filesync's MAVLink FTP client does not send (FACTS.md)
CREATE_FILE, WRITE_FILE, CREATE_DIRECTORY, REMOVE_DIRECTORY = 6, 7, 9, 10
OPEN_FILE_WO, TRUNCATE_FILE, RENAME = 11, 12, 13
NAK_ERRNO = {Nak.FAIL: errno.EFAULT, Nak.INVALID_DATA_SIZE: errno.EMSGSIZE, Nak.INVALID_SESSION: errno.EBADFD,
             Nak.NO_SESSIONS_AVAILABLE: errno.EMFILE, Nak.UNKNOWN_COMMAND: errno.ENOSYS}


def read_calls(read_log):
    """The read calls a stand-in logged to `read_log` (see read_log below) so far: [(path, offset, size)]."""
    if not os.path.exists(read_log):
        return []
    with open(read_log) as log:
        return [(path, int(offset), int(size)) for path, offset, size in
                (line.split() for line in log if not line.startswith("write "))]


def stop_stand_in(process):
    """Stop a stand-in's process: SIGTERM, then SIGKILL if it has not ended within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Failed(Exception):
    """The operation ended with success=False; r_errno None: keep MAVROS's r_errno as it was (an unknown NAK code)."""

    def __init__(self, r_errno):
        super().__init__(r_errno)
        self.r_errno = r_errno


class MavrosFtpPlugin:
    """MAVROS's FTP plugin state machine over one MavFtpClient connection (see the top of the file). A generation's
    stand-in subclasses it with refuse, log and the hooks below, and answers its service calls with call()."""

    SERIALIZED_CALLS = False  # True: calls wait for each other (MAVROS 2's callback group) rather than meet Busy

    def __init__(self, url, legacy):
        self.legacy = legacy
        self.client = MavFtpClient(url, source_system=MAVROS_SYSTEM_ID, source_component=MAVROS_COMPONENT_ID)
        self.client.connect()
        self.client._seq = 0  # MAVROS's last_send_seqnr(0): a restarted mavros_node counts from 0 again
        self.link = threading.Lock()  # the connection: one user at a time (operations, heartbeat polling)
        self.operation = threading.Lock()  # MAVROS's op_state: held while an operation is in progress
        self.sessions = {}  # file path -> session, MAVROS's session_file_map
        self.r_errno = 0  # MAVROS's r_errno member: what a failure answers
        self.expected_seq = None  # the sequence number of the reply to the last request sent
        self.reset_ack_seq = None  # set while a ResetSessions waits for its ACK (op_state ACK)

    # ----- one request, no resend -----

    def _exchange(self, opcode, deadline, session=0, offset=0, data=b"", size=None):
        """Send one request and wait for its reply until `deadline`; Failed(ETIMEDOUT) when none comes. A path
        (size None) is cut to 238 bytes and NUL-terminated, as MAVROS's set_data_string does."""
        if size is None:
            data = data[:MAX_DATA - 1] + b"\0"
            size = len(data) - 1
        seq = self.client._next_seq()
        self.expected_seq = (seq + 1) % 65536
        self.client._send(opcode, seq, session, offset, data, size)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Failed(errno.ETIMEDOUT)
            reply = self.client._poll(remaining)
            if reply is not None and reply.seq == self.expected_seq and reply.req_opcode == opcode:
                self.expected_seq = None
                return reply

    def _ack(self, opcode, deadline, **request):
        """_exchange, raising the NAK as MAVROS maps it."""
        reply = self._exchange(opcode, deadline, **request)
        if reply.opcode == Op.NAK:
            raise Failed(self._nak_errno(reply))
        return reply

    @staticmethod
    def _nak_errno(reply):
        code = reply.nak_code()
        if code == Nak.FAIL_ERRNO:
            return reply.data[1] if len(reply.data) > 1 else 0
        return NAK_ERRNO.get(code)  # None: a code MAVROS 1.x does not know leaves r_errno alone

    def _drain(self):
        """Take in replies that came while no operation waited, as MAVROS's message handler does (holds link)."""
        while True:
            reply = self.client._poll(0)
            if reply is None:
                return
            if self.reset_ack_seq is not None and reply.seq == self.reset_ack_seq:
                self.reset_ack_seq = None  # op_state ACK -> IDLE
            elif self.expected_seq is not None and reply.seq == self.expected_seq:
                self.expected_seq = None
                if reply.opcode == Op.ACK:  # a late ACK while idle: MAVROS answers it with ResetSessions
                    self.log_warning(f"FTP: late ACK of opcode {reply.req_opcode} while idle: ResetSessions")
                    self._send_reset()

    def _send_reset(self):
        if self.sessions:
            self.log_warning(f"FTP: Reset closes {len(self.sessions)} sessons")
        self.sessions.clear()
        seq = self.client._next_seq()
        self.reset_ack_seq, self.expected_seq = (seq + 1) % 65536, None
        self.client._send(Op.RESET_SESSIONS, seq)

    def call(self, work):
        """Run `work` as MAVROS runs a service: busy -> refuse; else (success, r_errno, result)."""
        if not self.operation.acquire(blocking=self.SERIALIZED_CALLS):
            self.refuse("FTP: Busy")
        try:
            with self.link:
                self._drain()
                if self.reset_ack_seq is not None:
                    self.refuse("FTP: Busy")
                try:
                    result = work()
                    self.r_errno = 0
                    return True, 0, result
                except Failed as failed:
                    if failed.r_errno is not None:
                        self.r_errno = failed.r_errno
                    return False, self.r_errno, None
        finally:
            self.operation.release()

    # ----- operations -----

    def list(self, path):
        deadline = time.monotonic() + LIST_TIMEOUT
        entries, offset = [], 0
        while True:
            reply = self._exchange(Op.LIST_DIRECTORY, deadline, offset=offset, data=path.encode())
            if reply.opcode == Op.NAK:
                if reply.nak_code() == Nak.EOF:
                    return entries
                raise Failed(self._nak_errno(reply))
            items = [item for item in reply.data.split(b"\0") if item]
            if not items:
                return entries
            offset += len(items)
            for item in items:
                kind, text = item[:1], item[1:].decode("utf-8", "replace")
                if kind == b"F":
                    name, _, size = text.partition("\t")
                    entries.append(self.entry(name, TYPE_FILE, int(size or 0)))
                elif kind == b"D":
                    entries.append(self.entry(text, TYPE_DIRECTORY, 0))

    OPEN_OPCODES = {MODE_READ: Op.OPEN_FILE_RO, MODE_WRITE: OPEN_FILE_WO, MODE_CREATE: CREATE_FILE}

    def open(self, path, mode):
        deadline = time.monotonic() + OPEN_TIMEOUT
        reply = self._ack(self.OPEN_OPCODES[mode], deadline, data=path.encode())
        self.sessions[path] = reply.session
        size = struct.unpack_from("<I", reply.data.ljust(4, b"\0"))[0]
        if self.take_lost_open_reply():  # the reply came before MAVROS started waiting: done, yet reported as a
            # timeout (it waits its whole 200 ms for a notification it missed)
            time.sleep(max(0.0, deadline - time.monotonic()))
            raise Failed(errno.ETIMEDOUT)
        return size

    def close(self, path):
        session = self.sessions.pop(path)
        self._ack(Op.TERMINATE_SESSION, time.monotonic() + OPEN_TIMEOUT, session=session)

    def read(self, path, offset, size):
        session = self.sessions[path]
        deadline = time.monotonic() + CHUNK_TIMEOUT * (size // MAX_DATA + 1)
        data = bytearray()
        while True:
            wanted = 0 if self.legacy else min(MAX_DATA, size - len(data))
            reply = self._exchange(Op.READ_FILE, deadline, session=session, offset=offset, size=wanted)
            if reply.opcode == Op.NAK:
                if reply.nak_code() == Nak.EOF:
                    return bytes(data)
                raise Failed(self._nak_errno(reply))
            if reply.session != session:
                raise Failed(errno.EBADSLT)
            if reply.offset != offset:
                raise Failed(errno.EBADE)
            copied = reply.data[:size - len(data)]
            data += copied
            if len(copied) != MAX_DATA:
                return bytes(data)
            offset += len(copied)

    def write(self, path, offset, data):
        session = self.sessions[path]
        deadline = time.monotonic() + CHUNK_TIMEOUT * (len(data) // MAX_DATA + 1)
        done = 0
        while done < len(data):
            chunk = data[done:done + MAX_DATA]
            reply = self._ack(WRITE_FILE, deadline, session=session, offset=offset + done, data=chunk,
                             size=len(chunk))
            if reply.session != session:
                raise Failed(errno.EBADSLT)
            if reply.offset != offset + done:
                raise Failed(errno.EBADE)
            # bytes written, from the ACK's data (0 without it: MAVROS's asserts are compiled out, it sends again)
            done += min(struct.unpack_from("<I", reply.data.ljust(4, b"\0"))[0], len(chunk))

    def checksum(self, path):
        reply = self._ack(Op.CALC_FILE_CRC32, time.monotonic() + LIST_TIMEOUT, data=path.encode())
        return struct.unpack_from("<I", reply.data.ljust(4, b"\0"))[0]

    def path_command(self, opcode, path, timeout, offset=0):
        """Remove, mkdir, rmdir, truncate (offset: the length), rename (path: both names, NUL-separated)."""
        self._ack(opcode, time.monotonic() + timeout, offset=offset, data=path.encode())

    def rename(self, old_path, new_path):
        paths = old_path.encode() + b"\0" + new_path.encode()
        if len(paths) >= MAX_DATA:
            self.log_error(f"FTP: rename file paths is too long: {len(paths)}")
            raise Failed(errno.ENAMETOOLONG)
        self._ack(RENAME, time.monotonic() + OPEN_TIMEOUT, data=paths)

    def reset(self):
        """ResetSessions, sent without waiting (MAVROS's reset does not check for an operation in progress)."""
        with self.link:
            self._send_reset()

    # ----- the services: each answers the fields of its response -----

    SERVICES = ("list", "open", "close", "read", "write", "mkdir", "rmdir", "remove", "truncate", "reset", "rename",
                "checksum")
    NOT_OPEN_REFUSED = True  # a read, write or close of a file not open: refused (MAVROS 1), or EBADF (MAVROS 2)
    read_log = ""  # for tests, not MAVROS: a file each read and write call appends a line to

    def answer(self, service, req) -> dict:
        """The fields of the response to a call of `service` (one of SERVICES) with request `req`."""
        return getattr(self, f"_on_{service}")(req)

    def _log_call(self, *fields):
        if self.read_log:
            with open(self.read_log, "a") as log:
                log.write(" ".join(str(field) for field in fields) + "\n")

    def _not_open(self, path, what):
        """None when MAVROS holds `path` open, else what MAVROS does about it (refuse, or fail with EBADF)."""
        if path in self.sessions:
            return None
        if self.NOT_OPEN_REFUSED:
            self.refuse(f"FTP:{what} {path}: not opened")
        self.log_error(f"FTP:{what} {path}: not opened")
        self.r_errno = errno.EBADF
        return {"success": False, "r_errno": errno.EBADF}

    def _on_list(self, req):
        ok, err, entries = self.call(lambda: self.list(req.dir_path))
        return {"list": entries or [], "success": ok, "r_errno": err}

    def _on_open(self, req):
        if req.file_path in self.sessions:
            self.refuse(f"FTP: File {req.file_path}: already opened")
        if req.mode not in self.OPEN_OPCODES:
            self.log_error(f"FTP: Unsupported open mode: {req.mode}")
            self.r_errno = errno.EINVAL
            return {"size": 0, "success": False, "r_errno": errno.EINVAL}
        ok, err, size = self.call(lambda: self.open(req.file_path, req.mode))
        return {"size": size or 0, "success": ok, "r_errno": err}

    def _on_close(self, req):
        return self._not_open(req.file_path, "Close") or self._answer(lambda: self.close(req.file_path))

    def _on_read(self, req):
        self._log_call(req.file_path, req.offset, req.size)
        refused = self._not_open(req.file_path, "Read")
        if refused is not None:
            return refused
        ok, err, data = self.call(lambda: self.read(req.file_path, req.offset, req.size))
        return {"data": data or b"", "success": ok, "r_errno": err}

    def _on_write(self, req):
        self._log_call("write", req.file_path, req.offset, len(req.data))
        return self._not_open(req.file_path, "Write") or self._answer(
            lambda: self.write(req.file_path, req.offset, bytes(req.data)))

    def _on_checksum(self, req):
        ok, err, crc = self.call(lambda: self.checksum(req.file_path))
        return {"crc32": crc or 0, "success": ok, "r_errno": err}

    def _answer(self, work):
        ok, err, _ = self.call(work)
        return {"success": ok, "r_errno": err}

    def _on_mkdir(self, req):
        return self._answer(lambda: self.path_command(CREATE_DIRECTORY, req.dir_path, OPEN_TIMEOUT))

    def _on_rmdir(self, req):
        return self._answer(lambda: self.path_command(REMOVE_DIRECTORY, req.dir_path, OPEN_TIMEOUT))

    def _on_remove(self, req):
        return self._answer(lambda: self.path_command(Op.REMOVE_FILE, req.file_path, OPEN_TIMEOUT))

    def _on_truncate(self, req):
        return self._answer(lambda: self.path_command(TRUNCATE_FILE, req.file_path, TRUNCATE_TIMEOUT, req.length))

    def _on_rename(self, req):
        return self._answer(lambda: self.rename(req.old_path, req.new_path))

    def _on_reset(self, _):
        self.reset()
        return {}

    def idle_step(self):
        """Between calls: take in stray replies as MAVROS would, if no operation is under way; return (connected,
        armed, system_status) from the vehicle's HEARTBEAT, as MAVROS's /state gives them."""
        if self.operation.acquire(blocking=False):
            try:
                with self.link:
                    self._drain()  # heartbeats are recorded on the way (an operation's polls record them too)
            finally:
                self.operation.release()
        heartbeat, seen = self.client.heartbeat, self.client.heartbeat_time
        connected = heartbeat is not None and time.monotonic() - seen < 3.0
        return connected, connected and self.client.armed, heartbeat.system_status if heartbeat is not None else 0

    # ----- what each generation's stand-in gives -----

    def refuse(self, text):
        """Log `text` as an error and make the service call fail as MAVROS of this generation does."""
        raise NotImplementedError

    def log_warning(self, text):
        raise NotImplementedError

    def log_error(self, text):
        raise NotImplementedError

    def entry(self, name, kind, size):
        """A mavros_msgs/FileEntry."""
        raise NotImplementedError

    def take_lost_open_reply(self) -> bool:
        """True when this open's reply is to be reported lost (see lost_open_replies at the top of fake_mavros.py)."""
        return False

