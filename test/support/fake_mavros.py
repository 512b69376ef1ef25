#!/usr/bin/env python3
"""A stand-in for MAVROS's FTP plugin and /mavros/state, for tests: MAVROS cannot be installed here (it is in neither
Debian's nor PyPI's registries), so this ROS node offers its service API exactly and relays to a real MAVLink FTP
server (the MAVSDK autopilot of support.mavsdk_autopilot) over MAVLink, as MAVROS would.

Run as `fake_mavros.py URL MODE __name:=mavros` (URL: pymavlink's, e.g. udpout:127.0.0.1:PORT; MODE: `fixed` or
`legacy`). With node name `mavros` the services are the twelve of MAVROS's ftp plugin, /mavros/ftp/{list, open,
close, read, write, mkdir, rmdir, remove, truncate, reset, rename, checksum}, with the types of mavros_msgs (the test
copy in test/mavros_msgs, same md5sums as 1.21.0) and std_srvs/Empty for reset.

What it reproduces of MAVROS 1.x (mavros/src/plugins/ftp.cpp at 1.21.0, identical on 'master', and FACTS.md):
- One operation at a time: a call while another is in progress logs "FTP: Busy" and the ROS call itself fails
  (rospy.ServiceException). So do an open of a file already open and (as FACTS.md records from a real build) a read,
  write or close of a file that is not open.
- Every operation sends its requests one at a time and never resends: sequential ReadFile of at most 239 bytes per
  round trip (a read goes on while a reply carries exactly 239 bytes, and ends with success on a shorter reply or
  NAK EOF); sequential WriteFile of at most 239 bytes, each advancing by the byte count the ACK carries (PX4 puts
  it in the ACK's data; an ACK without it advances nothing, and the chunk is sent again until the call times out,
  as a release build of MAVROS does). Timeouts per call: open/close/remove/rename/mkdir/rmdir 200 ms,
  list/checksum 5 s, truncate 25 s, read and write 200 ms x (size/239 + 1). A timeout answers success=False,
  r_errno=110 (ETIMEDOUT). Paths are cut to 238 bytes. Open modes: MODE_READ OpenFileRO, MODE_WRITE OpenFileWO, MODE_CREATE CreateFile, others
  success=False, r_errno EINVAL. A rename whose two paths take 239 bytes or more answers ENAMETOOLONG unsent.
- NAK codes become r_errno as MAVROS 1.x maps them (FailErrno: the server's errno; Fail EFAULT; InvalidDataSize
  EMSGSIZE; InvalidSession EBADFD; NoSessionsAvailable EMFILE; UnknownCommand ENOSYS); codes it does not know
  (FileNotFound, FileExists, FileProtected) leave r_errno as it was: 0 after a success, the previous failure's errno
  after a failure (MAVROS keeps r_errno in one member and sets it only then).
- reset sends ResetSessions without waiting and forgets every open file; until its ACK comes back, every call is
  refused as busy (MAVROS's op_state stays ACK: if that ACK is lost, MAVROS stays busy). An ACK that arrives while
  MAVROS is idle and carries the sequence number it expects (the late reply to a request that timed out) is
  answered with ResetSessions, which ends every session on the vehicle.
- Two modes. `fixed`: each ReadFile carries the size it wants (mavros PR 2179). `legacy`: MAVROS <= 1.21.0, whose
  ReadFile carries size 0; a server that honours the size (MAVSDK's does, as PX4 since v1.13) answers with 0 bytes,
  so every read succeeds with no data.
- The race seen with a real MAVROS 1.21.0 build (a reply that arrives before the service starts waiting): the
  parameter ~lost_open_replies (int) makes that many next opens do the open on the server, record the file as open,
  and still answer success=False, r_errno=110.
- /mavros/state (mavros_msgs/State): connected and armed from the vehicle's HEARTBEAT, as MAVROS publishes them. The
  test arms the MAVSDK autopilot itself (MavsdkAutopilot.set_armed).
- Killed (kill -9) and started again, as roslaunch restarts mavros_node: the services vanish and come back from a
  new process that knows no open file, while the vehicle keeps any session the old one held.
- For tests, not MAVROS: the parameter ~read_log (a file path) makes every /ftp/read call append a line
  "<file_path> <offset> <size>" to that file, and every /ftp/write call a line "write <file_path> <offset> <size>",
  so a test can see where transfers start (resume after a crash).
- Sequence numbers from 0, one more for each request, as MAVROS's last_send_seqnr(0) and the reply it takes: a
  restarted mavros_node counts from 0 again.
Not reproduced: MAVROS's reuse of the last reply's sequence number after a timeout (PX4 then resends its previous
reply) and its "Lost sync" failure (EILSEQ) on a reply with another sequence number: the stand-in numbers each
request anew and ignores replies to earlier requests during an operation.
"""
import errno
import os
import struct
import sys
import threading
import time

import rospy
from std_srvs.srv import Empty, EmptyResponse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "..", "src")]

from filesync.devices.vehicle.mavftp import MAX_DATA, MavFtpClient, Nak, Op  # noqa: E402

from mavros_msgs.msg import FileEntry, State  # noqa: E402
from mavros_msgs.srv import (FileChecksum, FileChecksumResponse, FileClose, FileCloseResponse,  # noqa: E402
                             FileList, FileListResponse, FileMakeDir, FileMakeDirResponse, FileOpen,
                             FileOpenResponse, FileRead, FileReadResponse, FileRemove, FileRemoveDir,
                             FileRemoveDirResponse, FileRemoveResponse, FileRename, FileRenameResponse, FileTruncate,
                             FileTruncateResponse, FileWrite, FileWriteResponse)

MAVROS_SYSTEM_ID, MAVROS_COMPONENT_ID = 1, 240  # MAVROS's defaults (system_id, component_id)
LIST_TIMEOUT, OPEN_TIMEOUT, CHUNK_TIMEOUT = 5.0, 0.2, 0.2
TRUNCATE_TIMEOUT = 5 * LIST_TIMEOUT
# opcodes filesync's MAVLink FTP client does not send (FACTS.md)
CREATE_FILE, WRITE_FILE, CREATE_DIRECTORY, REMOVE_DIRECTORY = 6, 7, 9, 10
OPEN_FILE_WO, TRUNCATE_FILE, RENAME = 11, 12, 13
NAK_ERRNO = {Nak.FAIL: errno.EFAULT, Nak.INVALID_DATA_SIZE: errno.EMSGSIZE, Nak.INVALID_SESSION: errno.EBADFD,
             Nak.NO_SESSIONS_AVAILABLE: errno.EMFILE, Nak.UNKNOWN_COMMAND: errno.ENOSYS}


class _Failed(Exception):
    """The operation ended with success=False; r_errno None: keep MAVROS's r_errno as it was (an unknown NAK code)."""

    def __init__(self, r_errno):
        super().__init__(r_errno)
        self.r_errno = r_errno


class FakeMavros:
    """MAVROS's FTP plugin state machine over one MavFtpClient connection (see the top of the file)."""

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
        """Send one request and wait for its reply until `deadline`; _Failed(ETIMEDOUT) when none comes. A path
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
                raise _Failed(errno.ETIMEDOUT)
            reply = self.client._poll(remaining)
            if reply is not None and reply.seq == self.expected_seq and reply.req_opcode == opcode:
                self.expected_seq = None
                return reply

    def _ack(self, opcode, deadline, **request):
        """_exchange, raising the NAK as MAVROS maps it."""
        reply = self._exchange(opcode, deadline, **request)
        if reply.opcode == Op.NAK:
            raise _Failed(self._nak_errno(reply))
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
                    rospy.logwarn("FTP: late ACK of opcode %d while idle: ResetSessions", reply.req_opcode)
                    self._send_reset()

    def _send_reset(self):
        if self.sessions:
            rospy.logwarn("FTP: Reset closes %d sessons", len(self.sessions))
        self.sessions.clear()
        seq = self.client._next_seq()
        self.reset_ack_seq, self.expected_seq = (seq + 1) % 65536, None
        self.client._send(Op.RESET_SESSIONS, seq)

    def _run(self, name, work):
        """Run `work` as MAVROS runs a service: busy -> the call fails; else (success, r_errno, result)."""
        if not self.operation.acquire(blocking=False):
            rospy.logerr("FTP: Busy")
            raise rospy.ServiceException("FTP: Busy")
        try:
            with self.link:
                self._drain()
                if self.reset_ack_seq is not None:
                    rospy.logerr("FTP: Busy")
                    raise rospy.ServiceException("FTP: Busy")
                try:
                    result = work()
                    self.r_errno = 0
                    return True, 0, result
                except _Failed as failed:
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
                raise _Failed(self._nak_errno(reply))
            items = [item for item in reply.data.split(b"\0") if item]
            if not items:
                return entries
            offset += len(items)
            for item in items:
                kind, text = item[:1], item[1:].decode("utf-8", "replace")
                if kind == b"F":
                    name, _, size = text.partition("\t")
                    entries.append(FileEntry(name=name, type=FileEntry.TYPE_FILE, size=int(size or 0)))
                elif kind == b"D":
                    entries.append(FileEntry(name=text, type=FileEntry.TYPE_DIRECTORY, size=0))

    OPEN_OPCODES = {FileOpen._request_class.MODE_READ: Op.OPEN_FILE_RO,
                    FileOpen._request_class.MODE_WRITE: OPEN_FILE_WO,
                    FileOpen._request_class.MODE_CREATE: CREATE_FILE}

    def open(self, path, mode):
        deadline = time.monotonic() + OPEN_TIMEOUT
        reply = self._ack(self.OPEN_OPCODES[mode], deadline, data=path.encode())
        self.sessions[path] = reply.session
        size = struct.unpack_from("<I", reply.data.ljust(4, b"\0"))[0]
        lost = rospy.get_param("~lost_open_replies", 0)
        if lost > 0:  # the reply came before MAVROS started waiting: done, yet reported as a timeout (it waits
            rospy.set_param("~lost_open_replies", lost - 1)  # its whole 200 ms for a notification it missed)
            time.sleep(max(0.0, deadline - time.monotonic()))
            raise _Failed(errno.ETIMEDOUT)
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
                raise _Failed(self._nak_errno(reply))
            if reply.session != session:
                raise _Failed(errno.EBADSLT)
            if reply.offset != offset:
                raise _Failed(errno.EBADE)
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
                raise _Failed(errno.EBADSLT)
            if reply.offset != offset + done:
                raise _Failed(errno.EBADE)
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
            rospy.logerr("FTP: rename file paths is too long: %d", len(paths))
            raise _Failed(errno.ENAMETOOLONG)
        self._ack(RENAME, time.monotonic() + OPEN_TIMEOUT, data=paths)

    def reset(self):
        """ResetSessions, sent without waiting (MAVROS's reset does not check for an operation in progress)."""
        with self.link:
            self._send_reset()

    # ----- ROS -----

    def serve(self):
        def not_open(path, what):
            rospy.logerr("FTP:%s %s: not opened", what, path)
            raise rospy.ServiceException(f"FTP:{what} {path}: not opened")

        read_log = rospy.get_param("~read_log", "")

        def log_call(*fields):
            if read_log:
                with open(read_log, "a") as log:
                    log.write(" ".join(str(field) for field in fields) + "\n")

        def on_list(req):
            ok, err, entries = self._run("list", lambda: self.list(req.dir_path))
            return FileListResponse(list=entries or [], success=ok, r_errno=err)

        def on_open(req):
            if req.file_path in self.sessions:
                rospy.logerr("FTP: File %s: already opened", req.file_path)
                raise rospy.ServiceException(f"FTP: File {req.file_path}: already opened")
            if req.mode not in self.OPEN_OPCODES:
                rospy.logerr("FTP: Unsupported open mode: %d", req.mode)
                self.r_errno = errno.EINVAL
                return FileOpenResponse(size=0, success=False, r_errno=errno.EINVAL)
            ok, err, size = self._run("open", lambda: self.open(req.file_path, req.mode))
            return FileOpenResponse(size=size or 0, success=ok, r_errno=err)

        def on_close(req):
            if req.file_path not in self.sessions:
                not_open(req.file_path, "Close")
            ok, err, _ = self._run("close", lambda: self.close(req.file_path))
            return FileCloseResponse(success=ok, r_errno=err)

        def on_read(req):
            log_call(req.file_path, req.offset, req.size)
            if req.file_path not in self.sessions:
                not_open(req.file_path, "Read")
            ok, err, data = self._run("read", lambda: self.read(req.file_path, req.offset, req.size))
            return FileReadResponse(data=data or b"", success=ok, r_errno=err)

        def on_write(req):
            log_call("write", req.file_path, req.offset, len(req.data))
            if req.file_path not in self.sessions:
                not_open(req.file_path, "Write")
            ok, err, _ = self._run("write", lambda: self.write(req.file_path, req.offset, bytes(req.data)))
            return FileWriteResponse(success=ok, r_errno=err)

        def on_checksum(req):
            ok, err, crc = self._run("checksum", lambda: self.checksum(req.file_path))
            return FileChecksumResponse(crc32=crc or 0, success=ok, r_errno=err)

        def path_service(response, opcode, timeout, field="file_path", offset=None):
            def handler(req):
                path = getattr(req, field)
                ok, err, _ = self._run(field, lambda: self.path_command(
                    opcode, path, timeout, getattr(req, offset) if offset else 0))
                return response(success=ok, r_errno=err)
            return handler

        def on_rename(req):
            ok, err, _ = self._run("rename", lambda: self.rename(req.old_path, req.new_path))
            return FileRenameResponse(success=ok, r_errno=err)

        def on_reset(_):
            self.reset()
            return EmptyResponse()

        services = [("list", FileList, on_list), ("open", FileOpen, on_open), ("close", FileClose, on_close),
                    ("read", FileRead, on_read), ("write", FileWrite, on_write),
                    ("mkdir", FileMakeDir, path_service(FileMakeDirResponse, CREATE_DIRECTORY, OPEN_TIMEOUT,
                                                        "dir_path")),
                    ("rmdir", FileRemoveDir, path_service(FileRemoveDirResponse, REMOVE_DIRECTORY, OPEN_TIMEOUT,
                                                          "dir_path")),
                    ("remove", FileRemove, path_service(FileRemoveResponse, Op.REMOVE_FILE, OPEN_TIMEOUT)),
                    ("truncate", FileTruncate, path_service(FileTruncateResponse, TRUNCATE_FILE, TRUNCATE_TIMEOUT,
                                                            offset="length")),
                    ("reset", Empty, on_reset), ("rename", FileRename, on_rename),
                    ("checksum", FileChecksum, on_checksum)]
        for name, kind, handler in services:
            rospy.Service(f"~ftp/{name}", kind, handler)
        state = rospy.Publisher("~state", State, queue_size=1, latch=True)
        while not rospy.is_shutdown():
            if self.operation.acquire(blocking=False):  # idle: take in stray replies as MAVROS would
                try:
                    with self.link:
                        self._drain()  # heartbeats are recorded on the way (an operation's polls record them too)
                finally:
                    self.operation.release()
            heartbeat, seen = self.client.heartbeat, self.client.heartbeat_time
            connected = heartbeat is not None and time.monotonic() - seen < 3.0
            message = State(connected=connected, armed=connected and self.client.armed,
                            system_status=heartbeat.system_status if heartbeat is not None else 0)
            message.header.stamp = rospy.Time.now()
            state.publish(message)
            time.sleep(0.2)


def main():
    argv = rospy.myargv(sys.argv)
    if len(argv) != 3 or argv[2] not in ("fixed", "legacy"):
        sys.exit("usage: fake_mavros.py URL fixed|legacy")
    rospy.init_node("mavros")
    FakeMavros(argv[1], legacy=argv[2] == "legacy").serve()


if __name__ == "__main__":
    main()
