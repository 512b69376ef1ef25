"""A real MAVLink FTP server for tests: PyPI `mavsdk` acting as an autopilot (system 1, component 1) with its FtpServer.

MavsdkAutopilot runs it in a subprocess (this file run as a script), so that a test can stop or kill it and so
that MAVSDK's own threads never keep pytest from exiting. The autopilot listens on udpin://127.0.0.1:PORT and
serves a directory; its HEARTBEAT carries the armed flag, which set_armed() switches through MAVSDK's own
ActionServer.set_armed_state (a real MAVSDK feature, no stand-in).

Px4SessionRule is the stand-in for PX4's session rule, and says so: MAVSDK's server silently ends the open session
when another open (OpenFileRO, CreateFile, OpenFileWO) arrives and re-executes a repeated request, while PX4
(src/modules/mavlink/mavlink_ftp.cpp) has one session, answers any open while it is taken with NAK
NoSessionsAvailable until it is terminated, reset or idle for 10 s, and answers a request whose seq_number is one
less than its last reply's with that reply again, from whoever it comes (details and the lines: its docstring). The
rule is a relay filter (support.linkemu.LinkEmulator(filters=[...])), the first one, in front of the real MAVSDK
server.

Px4WriteRules is the stand-in, likewise a filter, for what PX4 does on writes and MAVSDK 4.1.0's server does not
(checked with both sources: PX4 mavlink_ftp.cpp, MAVSDK mavlink_ftp_server.cpp). ListingRewrite makes the vehicle
list a name it could not hold (a bad or hostile server). MavsdkAutopilot.restart() is a real reboot of the autopilot.
"""
import errno
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_udp_port():
    """A UDP port on 127.0.0.1 that was free a moment ago (MAVSDK cannot bind port 0 and report it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MavsdkAutopilot:
    """A MAVSDK autopilot with FtpServer serving `root` on udpin://127.0.0.1:<port>, in a child process.

    `connection` is another MAVSDK connection URL instead (udpout://127.0.0.1:P to send to a client that listens,
    tcpin://127.0.0.1:P, serial:///dev/pts/N:921600); `port` a fixed udpin port. Use as a context manager, or
    start()/stop(). `log_path` receives MAVSDK's log (useful when a test fails).
    """

    def __init__(self, root, log_path=None, start_timeout=20.0, connection=None, port=None):
        self.root = str(root)
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.connection = connection
        self.fixed_port = port
        self.port = None
        self.process = None
        self._log = None

    def _spawn(self, connection):
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), connection, self.root],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        return self._read_line(self.start_timeout)

    def start(self):
        """Start the child and wait until it serves; retries with another port if the chosen one was taken."""
        last_error = None
        for _ in range(1 if self.connection or self.fixed_port else 5):
            self.port = self.fixed_port or free_udp_port()
            line = self._spawn(self.connection or f"udpin://127.0.0.1:{self.port}")
            if line == "ready":
                return self
            last_error = line
            self.stop()
        raise RuntimeError(f"MAVSDK autopilot did not start: {last_error}")

    def _read_line(self, timeout):
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not readable:
            return "timeout"
        return self.process.stdout.readline().decode().strip() or f"exited with {self.process.poll()}"

    def _command(self, text):
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()
        answer = self._read_line(10)
        if answer != "ok":
            raise RuntimeError(f"autopilot command {text!r}: {answer}")

    def set_armed(self, armed: bool):
        """Set the armed flag the autopilot's HEARTBEAT reports."""
        self._command("arm" if armed else "disarm")

    @property
    def url(self):
        """The pymavlink URL a client uses to reach the autopilot directly."""
        return f"udpout:127.0.0.1:{self.port}"

    def restart(self, down_seconds=0.0):
        """Kill the autopilot (a reboot: its FTP session is gone), wait `down_seconds`, start it on the same port."""
        port = self.port
        if self.process is not None:
            self.process.kill()
        self.stop()
        time.sleep(down_seconds)
        line = self._spawn(self.connection or f"udpin://127.0.0.1:{port}")
        self.port = port
        if line != "ready":
            raise RuntimeError(f"MAVSDK autopilot did not start again on port {port}: {line}")

    def stop(self):
        """Stop the child (politely, then by kill), always."""
        if self.process is None:
            return
        try:
            if self.process.poll() is None:
                try:
                    self.process.stdin.write(b"quit\n")
                    self.process.stdin.flush()
                except OSError:
                    pass
                try:
                    self.process.wait(5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(5)
        finally:
            for stream in (self.process.stdin, self.process.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            if self._log not in (None, subprocess.DEVNULL):
                self._log.close()
            self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


class FtpFilter:
    """A LinkEmulator filter that parses MAVLink frames per client and direction and may answer or rewrite them."""

    FTP = 110

    def __init__(self):
        from pymavlink.dialects.v20 import common as mavlink2
        self._mavlink2 = mavlink2
        self._parsers = {}
        self._lock = threading.Lock()
        self._packer = mavlink2.MAVLink(None, srcSystem=1, srcComponent=1)  # frames as the server sends them

    def _messages(self, key, data):
        parser = self._parsers.get(key)
        if parser is None:
            parser = self._parsers[key] = self._mavlink2.MAVLink(None)
            parser.robust_parsing = True
        try:
            return parser.parse_buffer(data) or []
        except Exception:  # not MAVLink: let it through untouched
            return []

    def frame(self, target_system, target_component, seq, opcode, req_opcode, offset=0, data=b"", session=0,
              burst_complete=0):
        """A FILE_TRANSFER_PROTOCOL frame from the server."""
        payload = struct.pack("<HBBBBBxI", seq % 65536, session, opcode, len(data), req_opcode, burst_complete,
                              offset) + data
        msg = self._mavlink2.MAVLink_file_transfer_protocol_message(0, target_system, target_component,
                                                                     payload.ljust(251, b"\0"))
        return msg.pack(self._packer)

    def __call__(self, direction, client, data, reply):
        with self._lock:
            messages = self._messages((direction, client), data)
            if not messages:
                return data
            out = []
            for msg in messages:
                if msg.get_msgId() != self.FTP:
                    out.append(msg.get_msgbuf())
                    continue
                payload = bytes(msg.payload)
                seq, session, opcode, size, req_opcode, burst_complete, offset = struct.unpack_from("<HBBBBBxI",
                                                                                                    payload)
                body = payload[12:12 + size]
                result = self.handle(direction, client, msg, seq, opcode, req_opcode, offset, body, reply)
                if result is not None:
                    out.append(msg.get_msgbuf() if result is True else result)
            return b"".join(bytes(part) for part in out) or None

    def handle(self, direction, client, msg, seq, opcode, req_opcode, offset, body, reply):
        """True: pass the frame on; None: drop it (answered with reply(...) maybe); bytes: send these instead."""
        return True


class Px4SessionRule(FtpFilter):
    """PX4's one-session rule, as a LinkEmulator filter in front of MAVSDK's server (see the top), exactly as
    MavlinkFTP in PX4's src/modules/mavlink/mavlink_ftp.cpp (PX4/PX4-Autopilot 9977a59f; 2021's version reads the same
    in these places) decides it, quirks included:
    - _process_request(): every request first renews the idle timer (_ensure_buffers_exist() stamps
      _last_work_buffer_access before anything else), then "if (payload->seq_number + 1 ==
      last_payload->seq_number)" resends the stored last reply and does nothing else: whatever the request's opcode
      and whoever sends it (PX4 keeps no client identity; a restarted MAVROS counts from 0 again), and with no wrap
      (uint16 + 1 is an int: a request numbered 65535 is never a resend);
    - _reply() stores a reply as the last one only when its data is at most 4 bytes (ACKs of open, write, CRC,
      terminate, reset; every NAK); a longer one (a read, a listing, a burst packet) leaves none stored;
    - _workOpen() serves OpenFileRO, CreateFile and OpenFileWO alike and answers NAK NoSessionsAvailable while
      _session_info.fd >= 0 (one session, anyone's);
    - _workTerminate(): NAK InvalidSession unless the session is 0 and open; _workReset() closes it and ACKs always;
    - _workRead(): NAK InvalidSession unless the session is 0 and open; _workWrite() and _workBurst() check only
      "session != 0 && fd < 0", so session 0 with no file open fails in lseek(-1): NAK FailErrno EBADF;
    - send(): a session without a request for more than 10 s is closed, and the stored reply with it.
    The filter keeps PX4's state from what passes (an ACK of an open opens the session, of TerminateSession or
    ResetSessions closes it) and answers the requests PX4 would refuse or resend itself, so MAVSDK never sees them.
    `refusals` counts the NoSessionsAvailable answers; `session_open` is PX4's "_session_info.fd >= 0".
    """

    TERMINATE, RESET, OPEN_RO, READ, CREATE, WRITE, OPEN_WO, BURST = 1, 2, 4, 5, 6, 7, 11, 15
    OPENS = (OPEN_RO, CREATE, OPEN_WO)
    ACK, NAK = 128, 129
    FAIL_ERRNO, INVALID_SESSION, NO_SESSIONS = 2, 4, 5
    STORED_REPLY_MAX = 4  # sizeof(uint32_t) in _reply()

    def __init__(self, idle_timeout=10.0):
        super().__init__()
        self.idle_timeout = idle_timeout
        self.session_open = False
        self.refusals = 0
        self._last_request = 0.0
        self._last_reply = None  # (seq, frame) of the stored reply

    def rebooted(self):
        """The server restarted: no session, no stored reply."""
        with self._lock:
            self.session_open, self._last_reply = False, None

    def handle(self, direction, client, msg, seq, opcode, req_opcode, offset, body, reply):
        if direction == "down":
            if opcode == self.ACK and req_opcode in self.OPENS:
                self.session_open = True
            elif opcode == self.ACK and req_opcode in (self.TERMINATE, self.RESET):
                self.session_open = False
            stored = len(body) <= self.STORED_REPLY_MAX
            self._last_reply = (seq, msg.get_msgbuf()) if stored else None
            return True
        now = time.monotonic()
        if self.session_open and now - self._last_request > self.idle_timeout:
            self.session_open, self._last_reply = False, None  # "Session was closed without activity"
        self._last_request = now
        if self._last_reply is not None and seq + 1 == self._last_reply[0]:
            reply(bytes(self._last_reply[1]))
            return None
        session = msg.payload[2]
        nak = None
        if opcode in self.OPENS and self.session_open:
            self.refusals += 1
            nak = bytes([self.NO_SESSIONS])
        elif opcode in (self.TERMINATE, self.READ) and (session != 0 or not self.session_open):
            nak = bytes([self.INVALID_SESSION])
        elif opcode in (self.WRITE, self.BURST) and not self.session_open:
            nak = bytes([self.INVALID_SESSION]) if session != 0 else bytes([self.FAIL_ERRNO, errno.EBADF])
        if nak is None:
            return True
        answer = self.frame(msg.get_srcSystem(), msg.get_srcComponent(), seq + 1, self.NAK, opcode, offset, nak,
                            session)
        self._last_reply = ((seq + 1) % 65536, answer)
        reply(answer)
        return None


def _path(body):
    return body.split(b"\0")[0].decode("utf-8", "surrogateescape")


class Px4WriteRules(FtpFilter):
    """PX4's write rules in front of MAVSDK's server (see the top), as a LinkEmulator filter. `root` is the folder
    MAVSDK serves (the filter reads and writes it like the vehicle's own storage does):
    - a CreateFile, OpenFileWO, RemoveFile, CreateDirectory or Rename whose (new) path is not under `writable` is
      answered NAK FileProtected (PX4's _validatePathIsWritable: only /fs/microsd/); WriteFile after such an open too;
    - WriteFile reaching beyond `capacity` bytes of a file (None: no limit) is answered NAK FailErrno ENOSPC, as PX4
      passes write()'s errno when the SD card is full; `writes_refused` counts them;
    - OpenFileWO keeps the file's bytes (PX4 opens O_CREAT|O_WRONLY; MAVSDK's server truncates): the filter puts the
      bytes back before the server's ACK reaches the client;
    - a WriteFile ACK carries the request's offset and the count written, as PX4's does (MAVSDK's says 0 and 0,
      which pymavlink's put cannot use).
    """

    CREATE, WRITE, REMOVE, MKDIR, OPEN_WO, RENAME, ACK, NAK = 6, 7, 8, 9, 11, 13, 128, 129
    FILE_PROTECTED, FAIL_ERRNO = 9, 2

    def __init__(self, root, writable="/", capacity=None):
        super().__init__()
        self.root, self.writable, self.capacity = str(root), writable, capacity
        self.writes_refused = 0
        self._requests = {}  # (client, seq) -> (opcode, offset, size, path)
        self._protected_session = False

    def _local(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def _nak(self, msg, seq, opcode, code, err=None):
        data = bytes([code]) if err is None else bytes([code, err])
        return self.frame(msg.get_srcSystem(), msg.get_srcComponent(), seq + 1, self.NAK, opcode, data=data)

    def handle(self, direction, client, msg, seq, opcode, req_opcode, offset, body, reply):
        if direction == "up":
            path = _path(body) if opcode in (self.CREATE, self.OPEN_WO, self.REMOVE, self.MKDIR) else None
            if opcode == self.RENAME:
                path = body.split(b"\0")[1].decode("utf-8", "surrogateescape")
            if path is not None and not path.startswith(self.writable):
                if opcode in (self.CREATE, self.OPEN_WO):
                    self._protected_session = True
                reply(self._nak(msg, seq, opcode, self.FILE_PROTECTED))
                return None
            if opcode in (self.CREATE, self.OPEN_WO):
                self._protected_session = False
            if opcode == self.WRITE:
                if self._protected_session:
                    reply(self._nak(msg, seq, opcode, self.FILE_PROTECTED))
                    return None
                if self.capacity is not None and offset + len(body) > self.capacity:
                    self.writes_refused += 1
                    reply(self._nak(msg, seq, opcode, self.FAIL_ERRNO, errno.ENOSPC))
                    return None
            kept = None
            if opcode == self.OPEN_WO and os.path.isfile(self._local(path)):
                with open(self._local(path), "rb") as handle:
                    kept = handle.read()
            self._requests[(client, seq)] = (opcode, offset, len(body), path, kept)
            return True
        request = self._requests.pop((client, (seq - 1) % 65536), None)
        if request is None or opcode != self.ACK:
            return True
        kind, at, size, path, kept = request
        if kind == self.OPEN_WO and kept:
            with open(self._local(path), "r+b") as handle:  # PX4 does not truncate on OpenFileWO
                handle.write(kept)
        if kind == self.WRITE:
            return self.frame(msg.target_system, msg.target_component, seq, self.ACK, self.WRITE, offset=at,
                              data=struct.pack("<I", size))
        return True


class ListingRewrite(FtpFilter):
    """A vehicle that lists names it cannot hold: in ListDirectory answers, the entry `name` becomes `listed`."""

    ACK, LIST = 128, 3

    def __init__(self, name, listed):
        super().__init__()
        self.name, self.listed = name.encode(), listed.encode()

    def handle(self, direction, client, msg, seq, opcode, req_opcode, offset, body, reply):
        if direction != "down" or opcode != self.ACK or req_opcode != self.LIST:
            return True
        entries = [entry[:1] + self.listed + entry[1 + len(self.name):]
                   if entry[1:1 + len(self.name) + 1] in (self.name + b"\t", self.name) else entry
                   for entry in body.split(b"\0")]
        return self.frame(msg.target_system, msg.target_component, seq, opcode, req_opcode, offset,
                          b"\0".join(entries))


def _serve(connection, root):
    """The child: run the autopilot on `connection` until stdin says quit or closes."""
    from mavsdk import ComponentType, Configuration, Mavsdk
    from mavsdk.plugins.action_server import ActionServer
    from mavsdk.plugins.ftp_server import FtpServer

    configuration = Configuration.create_with_component_type(ComponentType.AUTOPILOT)
    mavsdk = Mavsdk(configuration)
    result = mavsdk.add_any_connection(connection)
    if int(result) != 0:
        print(f"connection failed: {result}", flush=True)
        return 1
    component = mavsdk.server_component()
    ftp = FtpServer(component)
    ftp.set_root_dir(root)
    action = ActionServer(component)
    action.set_armed_state(False)
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        if command in ("arm", "disarm"):
            action.set_armed_state(command == "arm")
            print("ok", flush=True)
        else:
            print(f"unknown command {command}", flush=True)
    # MAVSDK's destructors can hang at interpreter exit; this process holds nothing that needs flushing
    os._exit(0)


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1], sys.argv[2]))
