#!/usr/bin/env python3
"""A stand-in for MAVROS 2's FTP plugin and /mavros/state, for tests: MAVROS 2 cannot be installed here (it is in
neither Debian's nor PyPI's registries), so this rclpy process offers its service API exactly and relays to a real
MAVLink FTP server (the MAVSDK autopilot of support.mavsdk_autopilot, with PX4's one-session rule in front of it
when the test puts support.mavsdk_autopilot.Px4SessionRule there) over MAVLink, as MAVROS 2 would.

Run as `fake_mavros2.py URL fixed|legacy [--namespace /mavros] [--read-log PATH]` (URL: pymavlink's, e.g.
udpout:127.0.0.1:PORT). The services are the twelve of MAVROS 2's ftp plugin, <namespace>/ftp/{list, open, close,
read, write, mkdir, rmdir, remove, truncate, reset, rename, checksum} (the plugin's node `ftp` under the `mavros`
node's namespace, as mavros 2 names it), with the types of mavros_msgs (the test copy in test/ros2_mavros_msgs,
copied from the ros2 branch) and std_srvs/Empty for reset; <namespace>/state is published with MAVROS 2's QoS
(depth 10, transient local).

What it reproduces of MAVROS 2 (mavros/src/plugins/ftp.cpp on mavlink/mavros's ros2 branch, 2.12.0):
- What MAVROS 1 and 2 share, from mavros_ftp_plugin.py (listed at the top of fake_mavros.py): requests one at a
  time and never resent, the same timeouts (open/close/remove/rename/mkdir/rmdir 200 ms, list/checksum 5 s,
  truncate 25 s, read and write 200 ms x (size/239 + 1); a timeout answers success=False, r_errno 110), the same
  NAK to errno mapping (FileNotFound, FileExists and FileProtected leave r_errno as it was), reset without waiting
  for its ACK, a late ACK while idle answered with ResetSessions, `fixed` and `legacy` reads.
- Calls wait for each other: the plugin's services are in its node's default (mutually exclusive) callback group
  of a multi-threaded executor, so a second call waits for the first instead of meeting "FTP: Busy".
- A refusal kills mavros_node: "FTP: Busy" (a call while a reset waits for its ACK, or after a late ACK made it
  send one) and an open of a file already open throw std::runtime_error in the service callback, which nothing
  catches: the process aborts (SIGABRT, "terminate called after throwing ...") and the call is never answered.
- A read, write or close of a file that is not open answers success=False, r_errno EBADF (9), and r_errno keeps
  EBADF for the next unknown NAK code (MAVROS 1.21.0 refused such calls instead).
- Killed (kill -9) and started again, as a launch file's respawn restarts mavros_node: the services come back from a
  new process that knows no open file (with a new /state publisher), while the vehicle keeps any session the old
  one held.
- For tests, not MAVROS: --read-log PATH appends "<file_path> <offset> <size>" for every read call and
  "write <file_path> <offset> <size>" for every write call.
"""
import argparse
import os
import resource
import signal
import sys
import threading
import time

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]

from mavros_ftp_plugin import MavrosFtpPlugin  # noqa: E402

from mavros_msgs import srv  # noqa: E402
from mavros_msgs.msg import FileEntry, State  # noqa: E402
from std_srvs.srv import Empty  # noqa: E402

TYPES = {"list": srv.FileList, "open": srv.FileOpen, "close": srv.FileClose, "read": srv.FileRead,
         "write": srv.FileWrite, "mkdir": srv.FileMakeDir, "rmdir": srv.FileRemoveDir, "remove": srv.FileRemove,
         "truncate": srv.FileTruncate, "reset": Empty, "rename": srv.FileRename, "checksum": srv.FileChecksum}
STATE_QOS = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL)  # sys_status: QoS(10).transient_local()
EXECUTOR_THREADS = 4  # UASExecutor: clamp(hardware_concurrency, 4, 16)


class FakeMavros2(MavrosFtpPlugin):
    """MAVROS 2's FTP plugin: calls wait for each other, a refusal aborts the process (see the top of the file)."""

    SERIALIZED_CALLS = True
    NOT_OPEN_REFUSED = False

    def __init__(self, url, legacy, node):
        super().__init__(url, legacy)
        self.logger = node.get_logger()

    def refuse(self, text):
        self.logger.error(text)
        sys.stderr.write(f"terminate called after throwing an instance of 'std::runtime_error'\n  what():  {text}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGABRT)

    def log_warning(self, text):
        self.logger.warning(text)

    def log_error(self, text):
        self.logger.error(text)

    def entry(self, name, kind, size):
        return FileEntry(name=name, type=kind, size=size)


def main():
    parser = argparse.ArgumentParser(description="a stand-in for MAVROS 2's FTP plugin")
    parser.add_argument("url")
    parser.add_argument("mode", choices=("fixed", "legacy"))
    parser.add_argument("--namespace", default="/mavros")
    parser.add_argument("--read-log", default="")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # an abort leaves no core file behind
    rclpy.init()
    namespace = args.namespace.rstrip("/")
    uas = rclpy.create_node(namespace.rsplit("/", 1)[-1], namespace=namespace.rsplit("/", 1)[0] or "/")
    ftp = rclpy.create_node("ftp", namespace=namespace)
    plugin = FakeMavros2(args.url, args.mode == "legacy", ftp)
    plugin.read_log = args.read_log
    for name, kind in TYPES.items():
        ftp.create_service(kind, f"~/{name}",
                           lambda request, response, name=name: _answer(response, plugin.answer(name, request)))
    state = uas.create_publisher(State, "~/state", STATE_QOS)
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    executor.add_node(uas)
    executor.add_node(ftp)
    threading.Thread(target=_spin, args=(executor,), daemon=True).start()
    try:
        while rclpy.ok():
            connected, armed, system_status = plugin.idle_step()
            message = State(connected=connected, armed=armed, system_status=system_status)
            message.header.stamp = uas.get_clock().now().to_msg()
            state.publish(message)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass


def _spin(executor):
    try:
        executor.spin()
    except ExternalShutdownException:
        pass


def _answer(response, fields):
    for field, value in fields.items():
        setattr(response, field, value)
    return response


if __name__ == "__main__":
    main()
