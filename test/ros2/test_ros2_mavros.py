"""The `mavros` source on ROS 2: logs on a MAVSDK autopilot (PX4's one-session rule in front of it) reach filesync's
ROS 2 nodes under the supervisor through MAVROS 2's FTP services, offered by the stand-in test/support/fake_mavros2.py
(MAVROS 2 cannot be installed here; it aborts on a refused call, answers EBADF for a file not open), and go to a
folder and an FTP server; each log leaves the vehicle once both hold a verified copy. The stand-in is killed in the
middle of a log and started again, as a launch file's respawn does: the download goes on from its checkpoint."""
import hashlib
import os
import subprocess
import sys
import time

from support.ftp_server import FtpServerProcess
from support.launch import free_port
from support.linkemu import LinkEmulator
from support.mavros_ftp_plugin import read_calls, stop_stand_in
from support.mavsdk_autopilot import MavsdkAutopilot, Px4SessionRule
from support.ros2_stack import MiB, Ros2Stack, wait_for
from support.ulog import write_log

FAKE_MAVROS2 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support",
                            "fake_mavros2.py")
CHECKPOINT = 256 * 1024


class Mavros2Vehicle:
    """A MAVSDK autopilot serving `root` behind PX4's one-session rule, and the MAVROS 2 stand-in in front of it,
    whose read calls are logged to mavros2-reads.txt in `workdir`."""

    def __init__(self, workdir, root):
        self.workdir = str(workdir)
        self.read_log = os.path.join(self.workdir, "mavros2-reads.txt")
        self.autopilot = MavsdkAutopilot(str(root), log_path=os.path.join(self.workdir, "mavsdk.log")).start()
        self.session_rule = Px4SessionRule()
        self.link = LinkEmulator(("127.0.0.1", self.autopilot.port), filters=[self.session_rule]).start()
        self.process = None
        self.start_mavros()

    def start_mavros(self):
        """Start the stand-in (again: a new process, which knows no open file)."""
        with open(os.path.join(self.workdir, "mavros2.log"), "ab") as output:
            self.process = subprocess.Popen([sys.executable, FAKE_MAVROS2, self.link.url, "fixed", "--read-log",
                                             self.read_log], stdout=output, stderr=subprocess.STDOUT)

    def kill_mavros(self):
        """kill -9 of mavros_node."""
        self.process.kill()
        self.process.wait(10)

    def reads(self):
        """The read calls so far: [(path, offset, size)]."""
        return read_calls(self.read_log)

    def stop(self):
        stop_stand_in(self.process)
        self.link.stop()
        self.autopilot.stop()


def digest(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def test_logs_through_mavros2_to_a_folder_and_ftp_and_a_killed_mavros_node_resumes_mid_log(tmp_path):
    root = tmp_path / "vehicle"
    names = ["a.ulg", "b.ulg", "big.ulg"]
    sizes = [1000, 40_000, 4 * MiB]
    digests = {name: write_log(str(root / "log" / name), size, seed=index)
               for index, (name, size) in enumerate(zip(names, sizes))}
    (tmp_path / "out").mkdir()
    server = FtpServerProcess(str(tmp_path / "ftp_root"), str(tmp_path / "ftp.log")).start()
    vehicle = stack = None
    try:
        vehicle = Mavros2Vehicle(tmp_path, root)
        config = {
            "staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
            "log_dir": str(tmp_path / "logs"), "checkpoint_bytes": CHECKPOINT, "scan_interval": 0.5,
            "poll_interval": 1.0, "retry_base": 0.2, "retry_cap": 1.0, "lease_seconds": 10.0,
            # calls of 16 x 239 bytes: MAVROS waits 3.4 s for one, so a call mavros_node never answers is given up
            # within a few seconds
            "sources": {"fc": {"kind": "mavros", "root": "/log", "chunk_bytes": 16 * 239}},
            "targets": {"out": {"kind": "folder", "path": str(tmp_path / "out")},
                        "ftp": server.target_options("/up")},
            "pipelines": [{"source": "fc", "targets": ["out", "ftp"], "delete_after_upload": True}],
            "ftp_server": {"enabled": False}, "web": {"enabled": True, "host": "127.0.0.1", "port": free_port()},
        }
        stack = Ros2Stack(tmp_path, config).start()
        big = "/log/big.ulg"
        wait_for(lambda: any(path == big and offset >= MiB for path, offset, _ in vehicle.reads()), 120,
                 "1 MiB of big.ulg read")
        vehicle.kill_mavros()
        reads_before = len(vehicle.reads())
        killed = max(offset for path, offset, _ in vehicle.reads() if path == big)
        time.sleep(1.0)
        vehicle.start_mavros()
        wait_for(lambda: not any(os.path.exists(root / "log" / name) for name in names), 150,
                 "the logs removed from the vehicle")
        for name in names:
            assert digest(tmp_path / "out" / name) == digests[name], name
            assert digest(os.path.join(server.root, "up", name)) == digests[name], name
        # after the restart the download of big.ulg went on from its checkpoint, not from byte 0
        resumed = [offset for path, offset, _ in vehicle.reads()[reads_before:] if path == big]
        assert resumed and min(resumed) >= killed - CHECKPOINT - 16 * 239 and min(resumed) > 0, (killed, resumed[:3])
    finally:
        left = stack.stop() if stack is not None else []
        if vehicle is not None:
            vehicle.stop()
        server.stop()
        assert not left, left


def test_a_call_mavros2_refuses_kills_mavros_node_and_the_source_waits_for_its_respawn(tmp_path):
    """MAVROS 2 throws on an open of a file it holds open already: mavros_node aborts, the call is never answered.
    The source (a library device on a node of its own) reports MAVROS gone once the call is past MAVROS's own wait,
    and reads again once a new mavros_node is there (respawn)."""
    from filesync.devices import create_source
    from filesync.devices.base import DeviceContext
    from filesync.errors import DeviceUnavailable
    from filesync.lock import LeaseTable
    root = tmp_path / "vehicle"
    expected = write_log(str(root / "log" / "a.ulg"), 50_000, seed=1)
    vehicle = Mavros2Vehicle(tmp_path, root)
    try:
        source = create_source("fc", {"kind": "mavros", "root": "/log", "settle": False},
                               DeviceContext(LeaseTable(), "test"))
        source.probe()
        # another client of MAVROS opens the log first, so the source's open is one MAVROS 2 refuses by aborting
        calls = source._connect()[1]
        assert calls.call("open", "/log/a.ulg", 0, wait=0.2).success
        started = time.monotonic()
        try:
            b"".join(source.read("a.ulg", 0))
        except DeviceUnavailable:
            pass
        else:
            raise AssertionError("read a file MAVROS 2 should have refused")
        assert vehicle.process.wait(1) == -6  # SIGABRT: the uncaught std::runtime_error
        # given up after MAVROS's wait for an open (0.2 s) and the call layer's margin (3 s), not after the 20 s a
        # dead node's services stay in the DDS graph
        assert time.monotonic() - started < 10
        vehicle.start_mavros()  # respawn
        wait_for(lambda: _probed(source), 60, "the source back after mavros_node's respawn")
        data = b"".join(source.read("a.ulg", 0))
        assert hashlib.sha256(data).hexdigest() == expected
    finally:
        vehicle.stop()


def _probed(source):
    from filesync.errors import DeviceUnavailable
    try:
        source.probe()
    except DeviceUnavailable:
        return False
    return True
