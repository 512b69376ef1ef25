"""`filesync-ros2 run CONFIG`: filesync's ROS 2 nodes, each its own process under /filesync, each started again after
RESPAWN_DELAY when it dies, as roslaunch's respawn (and launch_ros's) does. It stands in for
`ros2 launch filesync sync.launch.py`, which needs the launch system PyPI does not carry; the launch file names the
same nodes and parameters (NODES, test/ros2 checks). Ctrl-C or SIGTERM stops every node (SIGINT, then SIGKILL after
STOP_TIMEOUT) and then the supervisor; a supervisor killed outright takes its nodes with it (they get SIGINT).
"""
import argparse
import ctypes
import functools
import os
import queue
import signal
import subprocess
import sys
import threading
import time

from filesync.config import load_config_file
from filesync.errors import ConfigError

NAMESPACE = "/filesync"
# node name -> executable (the launch file's), in start order
NODES = {"ledger": "ledger_node", "lock": "lock_node", "ftp_server": "ftp_server_node", "vehicle": "vehicle_node",
         "finder": "finder_node", "downloader": "downloader_node", "uploader": "uploader_node",
         "status": "status_node", "web": "web_node"}
# executable -> what runs it under this interpreter
COMMANDS = {"ledger_node": ["-m", "filesync.ros2.ledger_node"], "lock_node": ["-m", "filesync.ros2.lock_node"],
            "ftp_server_node": ["-m", "filesync.ros2.ftp_server_node"],
            "vehicle_node": ["-m", "filesync.ros2.vehicle_node"],
            "finder_node": ["-m", "filesync.ros2.workers_node", "finder"],
            "downloader_node": ["-m", "filesync.ros2.workers_node", "downloader"],
            "uploader_node": ["-m", "filesync.ros2.workers_node", "uploader"],
            "status_node": ["-m", "filesync.ros2.status_node"], "web_node": ["-m", "filesync.ros2.web_node"]}
PARAMETERS = ("config",)  # every node's, the YAML file's path
RESPAWN_DELAY = 2.0
STOP_TIMEOUT = 15.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# resolved here, in the parent: the child between fork and exec only calls them (no loading, no locks to take there)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.signal.argtypes, _libc.signal.restype = (ctypes.c_int, ctypes.c_void_p), ctypes.c_void_p
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong)


def _end_with_parent(parent):
    """In the child before exec: SIGINT when the supervisor (pid `parent`) dies, even by kill -9, so no node outlives
    it. First SIGINT's default action back (the handler inherited from the supervisor would take a SIGINT that comes
    before the exec, and the node would never see it); then the parent-death signal; a supervisor that died before
    that sends nothing, so the child ends itself then."""
    _libc.signal(signal.SIGINT, None)  # SIG_DFL
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGINT)
    if os.getppid() != parent:
        os._exit(1)


def node_command(name, config_path):
    """The command line of node `name` with the config parameter and its name and namespace."""
    return [sys.executable] + COMMANDS[NODES[name]] + [
        "--ros-args", "-r", f"__node:={name}", "-r", f"__ns:={NAMESPACE}", "-p", f"config:={config_path}"]


def exec_node(executable, args):
    """Become node `executable` (an installed `ros2 run filesync <executable>` script's work), passing `args` on."""
    os.execv(sys.executable, [sys.executable] + COMMANDS[executable] + list(args))


class Supervisor:
    """Starts the nodes, starts a dead one again after respawn_delay, stops them all on stop()."""

    def __init__(self, config_path, names=tuple(NODES), respawn_delay=RESPAWN_DELAY, log_dir=None):
        self.config_path = os.path.abspath(config_path)
        self.names, self.respawn_delay, self.log_dir = list(names), respawn_delay, log_dir
        self.processes = {}
        self._events = queue.Queue()  # ("ended", name, process, exit code), ("start", name), or None: stop

    def _start(self, name):
        output = None
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            output = open(os.path.join(self.log_dir, f"{name}.log"), "ab")
        # its own session: a Ctrl-C reaches the supervisor only, which stops the nodes; the parent-death signal is
        # bound to the thread that forks, so every start happens on run()'s thread
        process = subprocess.Popen(node_command(name, self.config_path), stdout=output, stderr=subprocess.STDOUT
                                   if output else None, start_new_session=True,
                                   preexec_fn=functools.partial(_end_with_parent, os.getpid()))
        if output:
            output.close()
        self.processes[name] = process
        # one waiting thread per process: the supervisor sleeps until a node ends, it never polls
        threading.Thread(target=lambda: self._events.put(("ended", name, process, process.wait())),
                         daemon=True).start()

    def run(self):
        """Start every node and keep them running until stop()."""
        for name in self.names:
            self._start(name)
        while True:
            event = self._events.get()  # asleep until a node ends, a restart is due or stop() is called
            if event is None:
                break
            if event[0] == "start":
                self._start(event[1])
                continue
            _, name, process, code = event
            if self.processes.get(name) is not process:
                continue
            sys.stderr.write(f"filesync-ros2: node {NAMESPACE}/{name} ended (exit {code}); starting it again in "
                             f"{self.respawn_delay:g} s\n")
            timer = threading.Timer(self.respawn_delay, self._events.put, args=(("start", name),))
            timer.daemon = True
            timer.start()
        self._stop_all()

    def stop(self):
        """Make run() stop every node and return. Safe in a signal handler: the put happens on another thread (the
        main thread may hold the queue's lock when the signal comes)."""
        threading.Thread(target=self._events.put, args=(None,), daemon=True).start()

    def _stop_all(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.processes.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main(argv=None):
    """`filesync-ros2 run CONFIG [--respawn-delay S] [--log-dir DIR]`; returns the exit code."""
    parser = argparse.ArgumentParser(prog="filesync-ros2", description="Run filesync's ROS 2 nodes.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="start every node; restart one that dies; Ctrl-C stops all",
        description="Start filesync's ROS 2 nodes under /filesync, each its own process with the configuration's "
                    "path as its `config` parameter (what `ros2 launch filesync sync.launch.py config:=CONFIG` "
                    "starts); start one that dies again after --respawn-delay; Ctrl-C or SIGTERM stops them all.")
    run.add_argument("config", help="the YAML configuration (the file ROS 1's sync.launch loads)")
    run.add_argument("--respawn-delay", type=float, default=RESPAWN_DELAY, help="seconds before a restart")
    run.add_argument("--log-dir", default="", help="write each node's output to DIR/<node>.log (default: here)")
    args = parser.parse_args(argv)
    try:
        load_config_file(args.config)  # a bad file: one line now, not nodes failing over and over
    except ConfigError as error:
        sys.stderr.write(f"filesync-ros2: bad configuration: {error}\n")
        return 2
    supervisor = Supervisor(args.config, respawn_delay=args.respawn_delay, log_dir=args.log_dir or None)
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: supervisor.stop())
    supervisor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
