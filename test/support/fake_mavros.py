#!/usr/bin/env python3
"""A stand-in for MAVROS's FTP plugin and /mavros/state, for tests: MAVROS cannot be installed here (it is in neither
Debian's nor PyPI's registries), so this ROS node offers its service API exactly and relays to a real MAVLink FTP
server (the MAVSDK autopilot of support.mavsdk_autopilot) over MAVLink, as MAVROS would.

Run as `fake_mavros.py URL MODE __name:=mavros` (URL: pymavlink's, e.g. udpout:127.0.0.1:PORT; MODE: `fixed` or
`legacy`). With node name `mavros` the services are /mavros/ftp/{list,open,read,close,checksum,remove,reset} with
the types of mavros_msgs (the test copy in test/mavros_msgs, same md5sums as 1.21.0) and std_srvs/Empty for reset.

What it reproduces of MAVROS 1.x (mavros/src/plugins/ftp.cpp and the observations in FACTS.md):
- One operation at a time: a call while another is in progress logs "FTP: Busy" and the ROS call itself fails
  (rospy.ServiceException). So do a read or close of a file that is not open and an open of a file already open.
- Every operation sends its requests one at a time and never resends: sequential ReadFile of at most 239 bytes per
  round trip (a read goes on while a reply carries exactly 239 bytes, and ends with success on a shorter reply or
  NAK EOF). Timeouts per call: open/close 200 ms, list/checksum 5 s, read 200 ms x (size/239 + 1). A timeout answers
  success=False, r_errno=110 (ETIMEDOUT).
- NAK codes become r_errno as MAVROS 1.x maps them (FailErrno: the server's errno; Fail EFAULT; InvalidDataSize
  EMSGSIZE; InvalidSession EBADFD; NoSessionsAvailable EMFILE; UnknownCommand ENOSYS); codes it does not know
  (FileNotFound, FileExists, FileProtected) leave r_errno 0.
- Two modes. `fixed`: each ReadFile carries the size it wants (mavros PR 2179). `legacy`: MAVROS <= 1.21.0, whose
  ReadFile carries size 0; a server that honours the size (MAVSDK's does, as PX4 since v1.13) answers with 0 bytes,
  so every read succeeds with no data.
- The race seen with a real MAVROS 1.21.0 build (a reply that arrives before the service starts waiting): the
  parameter ~lost_open_replies (int) makes that many next opens do the open on the server, record the file as open,
  and still answer success=False, r_errno=110.
- /mavros/state (mavros_msgs/State): connected and armed from the vehicle's HEARTBEAT, as MAVROS publishes them. The
  test arms the MAVSDK autopilot itself (MavsdkAutopilot.set_armed).
- For tests, not MAVROS: the parameter ~read_log (a file path) makes every /ftp/read call append a line
  "<file_path> <offset> <size>" to that file, so a test can see where reads start (resume after a crash).
Not reproduced: MAVROS answering a stray ACK while idle with ResetSessions, and the write/mkdir/rename services.
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

from filesync.devices.mavftp import MAX_DATA, MavFtpClient, Nak, Op  # noqa: E402

from mavros_msgs.msg import FileEntry, State  # noqa: E402
from mavros_msgs.srv import (FileChecksum, FileChecksumResponse, FileClose, FileCloseResponse,  # noqa: E402
                             FileList, FileListResponse, FileOpen, FileOpenResponse, FileRead, FileReadResponse,
                             FileRemove, FileRemoveResponse)

MAVROS_SYSTEM_ID, MAVROS_COMPONENT_ID = 1, 240  # MAVROS's defaults (system_id, component_id)
LIST_TIMEOUT, OPEN_TIMEOUT, CHUNK_TIMEOUT = 5.0, 0.2, 0.2
NAK_ERRNO = {Nak.FAIL: errno.EFAULT, Nak.INVALID_DATA_SIZE: errno.EMSGSIZE, Nak.INVALID_SESSION: errno.EBADFD,
             Nak.NO_SESSIONS_AVAILABLE: errno.EMFILE, Nak.UNKNOWN_COMMAND: errno.ENOSYS}


class _Failed(Exception):
    """The operation ended with success=False and this r_errno."""

    def __init__(self, r_errno):
        super().__init__(r_errno)
        self.r_errno = r_errno


class FakeMavros:
    """MAVROS's FTP plugin state machine over one MavFtpClient connection (see the top of the file)."""

    def __init__(self, url, legacy):
        self.legacy = legacy
        self.client = MavFtpClient(url, source_system=MAVROS_SYSTEM_ID, source_component=MAVROS_COMPONENT_ID)
        self.link = threading.Lock()  # the connection: one user at a time (operations, heartbeat polling)
        self.operation = threading.Lock()  # MAVROS's op_state: held while an operation is in progress
        self.sessions = {}  # file path -> session, MAVROS's session_file_map

    # ----- one request, no resend -----

    def _exchange(self, opcode, deadline, session=0, offset=0, data=b"", size=None):
        """Send one request and wait for its reply until `deadline`; _Failed(ETIMEDOUT) when none comes."""
        seq = self.client._next_seq()
        self.client._send(opcode, seq, session, offset, data, size)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Failed(errno.ETIMEDOUT)
            reply = self.client._poll(remaining)
            if reply is not None and reply.seq == (seq + 1) % 65536 and reply.req_opcode == opcode:
                return reply

    @staticmethod
    def _nak_errno(reply):
        code = reply.nak_code()
        if code == Nak.FAIL_ERRNO:
            return reply.data[1] if len(reply.data) > 1 else 0
        return NAK_ERRNO.get(code, 0)

    def _run(self, name, work):
        """Run `work` as MAVROS runs a service: busy -> the call fails; else (success, r_errno, result)."""
        if not self.operation.acquire(blocking=False):
            rospy.logerr("FTP: Busy")
            raise rospy.ServiceException("FTP: Busy")
        try:
            with self.link:
                try:
                    return True, 0, work()
                except _Failed as failed:
                    return False, failed.r_errno, None
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

    def open(self, path):
        reply = self._exchange(Op.OPEN_FILE_RO, time.monotonic() + OPEN_TIMEOUT, data=path.encode())
        if reply.opcode == Op.NAK:
            raise _Failed(self._nak_errno(reply))
        self.sessions[path] = reply.session
        size = struct.unpack_from("<I", reply.data.ljust(4, b"\0"))[0]
        lost = rospy.get_param("~lost_open_replies", 0)
        if lost > 0:  # the reply came before MAVROS started waiting: done, yet reported as a timeout
            rospy.set_param("~lost_open_replies", lost - 1)
            raise _Failed(errno.ETIMEDOUT)
        return size

    def close(self, path):
        session = self.sessions.pop(path)
        reply = self._exchange(Op.TERMINATE_SESSION, time.monotonic() + OPEN_TIMEOUT, session=session)
        if reply.opcode == Op.NAK:
            raise _Failed(self._nak_errno(reply))

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
            if reply.offset != offset:
                raise _Failed(errno.EBADE)
            copied = reply.data[:size - len(data)]
            data += copied
            if len(copied) != MAX_DATA:
                return bytes(data)
            offset += len(copied)

    def checksum(self, path):
        reply = self._exchange(Op.CALC_FILE_CRC32, time.monotonic() + LIST_TIMEOUT, data=path.encode())
        if reply.opcode == Op.NAK:
            raise _Failed(self._nak_errno(reply))
        return struct.unpack_from("<I", reply.data.ljust(4, b"\0"))[0]

    def remove(self, path):
        reply = self._exchange(Op.REMOVE_FILE, time.monotonic() + OPEN_TIMEOUT, data=path.encode())
        if reply.opcode == Op.NAK:
            raise _Failed(self._nak_errno(reply))

    def reset(self):
        """ResetSessions, sent without waiting (MAVROS's reset does not check for an operation in progress)."""
        self.sessions.clear()
        with self.link:
            self.client._send(Op.RESET_SESSIONS, self.client._next_seq())

    # ----- ROS -----

    def serve(self):
        def not_open(path, what):
            rospy.logerr("FTP:%s %s: not opened", what, path)
            raise rospy.ServiceException(f"FTP:{what} {path}: not opened")

        def on_list(req):
            ok, err, entries = self._run("list", lambda: self.list(req.dir_path))
            return FileListResponse(list=entries or [], success=ok, r_errno=err)

        def on_open(req):
            if req.file_path in self.sessions:
                rospy.logerr("FTP: File %s: already opened", req.file_path)
                raise rospy.ServiceException(f"FTP: File {req.file_path}: already opened")
            if req.mode != req.MODE_READ:
                return FileOpenResponse(size=0, success=False, r_errno=errno.EINVAL)  # writing: not needed here
            ok, err, size = self._run("open", lambda: self.open(req.file_path))
            return FileOpenResponse(size=size or 0, success=ok, r_errno=err)

        def on_close(req):
            if req.file_path not in self.sessions:
                not_open(req.file_path, "Close")
            ok, err, _ = self._run("close", lambda: self.close(req.file_path))
            return FileCloseResponse(success=ok, r_errno=err)

        read_log = rospy.get_param("~read_log", "")

        def on_read(req):
            if read_log:
                with open(read_log, "a") as log:
                    log.write(f"{req.file_path} {req.offset} {req.size}\n")
            if req.file_path not in self.sessions:
                not_open(req.file_path, "Read")
            ok, err, data = self._run("read", lambda: self.read(req.file_path, req.offset, req.size))
            return FileReadResponse(data=data or b"", success=ok, r_errno=err)

        def on_checksum(req):
            ok, err, crc = self._run("checksum", lambda: self.checksum(req.file_path))
            return FileChecksumResponse(crc32=crc or 0, success=ok, r_errno=err)

        def on_remove(req):
            ok, err, _ = self._run("remove", lambda: self.remove(req.file_path))
            return FileRemoveResponse(success=ok, r_errno=err)

        def on_reset(_):
            self.reset()
            return EmptyResponse()

        services = [("list", FileList, on_list), ("open", FileOpen, on_open), ("close", FileClose, on_close),
                    ("read", FileRead, on_read), ("checksum", FileChecksum, on_checksum),
                    ("remove", FileRemove, on_remove), ("reset", Empty, on_reset)]
        for name, kind, handler in services:
            rospy.Service(f"~ftp/{name}", kind, handler)
        state = rospy.Publisher("~state", State, queue_size=1, latch=True)
        while not rospy.is_shutdown():
            with self.link:
                while self.client._poll(0) is not None:  # stray replies: dropped; heartbeats: recorded
                    pass
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
