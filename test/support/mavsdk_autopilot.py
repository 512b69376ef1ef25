"""A real MAVLink FTP server for tests: PyPI `mavsdk` acting as an autopilot (system 1, component 1) with its FtpServer.

MavsdkAutopilot runs it in a subprocess (this file run as a script), so that a test can stop or kill it and so
that MAVSDK's own threads never keep pytest from exiting. The autopilot listens on udpin://127.0.0.1:PORT and
serves a directory; its HEARTBEAT carries the armed flag, which set_armed() switches through MAVSDK's own
ActionServer.set_armed_state (a real MAVSDK feature, no stand-in).

Px4SessionRule is the one stand-in here, and says so: MAVSDK's server silently ends the open session when a second
OpenFileRO arrives, while PX4 (src/modules/mavlink/mavlink_ftp.cpp) has one session and answers a second open with
NAK NoSessionsAvailable until the session is terminated, reset, or idle for 10 s; a repeated seq_number gets the
previous reply again. The rule is a relay filter (support.linkemu.LinkEmulator(filters=[...])) placed in front of
the real MAVSDK server that answers exactly so.
"""
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

    Use as a context manager, or start()/stop(). `log_path` receives MAVSDK's log (useful when a test fails).
    """

    def __init__(self, root, log_path=None, start_timeout=20.0):
        self.root = str(root)
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.port = None
        self.process = None
        self._log = None

    def start(self):
        """Start the child and wait until it serves; retries with another port if the chosen one was taken."""
        last_error = None
        for _ in range(5):
            self.port = free_udp_port()
            self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
            self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(self.port), self.root],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
            line = self._read_line(self.start_timeout)
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


class Px4SessionRule:
    """Stand-in for PX4's one-session rule, as a LinkEmulator filter in front of MAVSDK's server (see the top).

    While a session is open (an OpenFileRO was ACKed and no TerminateSession/ResetSessions has been ACKed since), another
    OpenFileRO is answered with NAK NoSessionsAvailable by the relay and does not reach the server. As in PX4's
    MavlinkFTP::send(), the session closes after `idle_timeout` seconds without any FTP request from anyone (every
    request, a refused open or a listing too, counts as activity). `refusals` counts the refusals.
    """

    OPEN, TERMINATE, RESET, ACK, NAK, NO_SESSIONS = 4, 1, 2, 128, 129, 5

    def __init__(self, idle_timeout=10.0):
        from pymavlink.dialects.v20 import common as mavlink2
        self._mavlink2 = mavlink2
        self.idle_timeout = idle_timeout
        self.open_seq = None  # seq of the OpenFileRO that holds the session
        self.last_used = 0.0
        self.refusals = 0
        self._parsers = {}
        self._lock = threading.Lock()
        # NAKs are framed as the server (system 1, component 1) would send them
        self._packer = mavlink2.MAVLink(None, srcSystem=1, srcComponent=1)

    def _parse(self, key, data):
        parser = self._parsers.get(key)
        if parser is None:
            parser = self._parsers[key] = self._mavlink2.MAVLink(None)
            parser.robust_parsing = True
        try:
            return parser.parse_buffer(data) or []
        except Exception:  # not MAVLink: let it through untouched
            return []

    def __call__(self, direction, client, data, reply):
        with self._lock:
            for msg in self._parse((direction, client), data):
                if msg.get_msgId() != self._mavlink2.MAVLINK_MSG_ID_FILE_TRANSFER_PROTOCOL:
                    continue
                payload = bytes(msg.payload)
                seq, session, opcode = struct.unpack_from("<HBB", payload)
                req_opcode = payload[5]
                now = time.monotonic()
                if self.open_seq is not None and now - self.last_used > self.idle_timeout:
                    self.open_seq = None  # PX4 drops an idle session
                if direction == "up":
                    self.last_used = now
                    if opcode == self.OPEN and self.open_seq is not None and seq != self.open_seq:
                        self.refusals += 1
                        reply(self._nak(msg, seq, opcode))
                        return None
                elif opcode == self.ACK:
                    if req_opcode == self.OPEN:
                        self.open_seq, self.last_used = (seq - 1) % 65536, now
                    elif req_opcode in (self.TERMINATE, self.RESET):
                        self.open_seq = None
            return data

    def _nak(self, request, seq, opcode):
        payload = struct.pack("<HBBBBBxI", (seq + 1) % 65536, 0, self.NAK, 1, opcode, 0, 0) + bytes([self.NO_SESSIONS])
        msg = self._mavlink2.MAVLink_file_transfer_protocol_message(
            0, request.get_srcSystem(), request.get_srcComponent(), payload.ljust(251, b"\0"))
        return msg.pack(self._packer)


def _serve(port, root):
    """The child: run the autopilot until stdin says quit or closes."""
    from mavsdk import ComponentType, Configuration, Mavsdk
    from mavsdk.plugins.action_server import ActionServer
    from mavsdk.plugins.ftp_server import FtpServer

    configuration = Configuration.create_with_component_type(ComponentType.AUTOPILOT)
    mavsdk = Mavsdk(configuration)
    result = mavsdk.add_any_connection(f"udpin://127.0.0.1:{port}")
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
    sys.exit(_serve(int(sys.argv[1]), sys.argv[2]))
