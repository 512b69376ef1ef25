"""A private roscore and `roslaunch filesync sync.launch` as processes, for the benchmarks and the soak.

Each gets its own master on a free port and its own ROS_HOME, so runs never meet other tests' nodes. Needs the catkin
workspace's environment (source devel/setup.bash), as `make bench`, `make soak` and `make test` provide.
"""
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from xml.etree import ElementTree
from contextlib import contextmanager

import psutil
import yaml



@functools.lru_cache(maxsize=None)
def ros_workspace_sourced():
    """The catkin workspace's devel space is sourced (make test does that): ROS's tools are on PATH and catkin finds
    filesync's node relays and messages."""
    if not all(shutil.which(tool) for tool in ("roscore", "roslaunch", "catkin_find")):
        return False
    return subprocess.run(["catkin_find", "--first-only", "--libexec", "filesync", "ledger_node"],
                          capture_output=True, text=True, timeout=60).stdout.strip() != ""


NEEDS_ROS_WORKSPACE = "needs the catkin workspace sourced (make test does that)"


def launch_nodes():
    """The node names in the package's launch/sync.launch."""
    tree = ElementTree.parse(os.path.join(os.path.dirname(__file__), "..", "..", "launch", "sync.launch"))
    return [node.get("name") for node in tree.iter("node")]


def free_port():
    """A TCP port nobody listens on right now (bind to 0 and read it back)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_port(port, timeout, process=None):
    """Wait until something listens on 127.0.0.1:`port`; fail early if `process` (the one to listen) ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process to listen on port {port} ended (rc {process.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


KEEPALIVE_RESET = 150.0  # seconds: the latest a keepalive resets a dead node's connection (130 s seen)


def wait_keepalive_resets(port, timeout=KEEPALIVE_RESET):
    """Wait until the TCP connections still open to 127.0.0.1:`port` (a killed node's) are reset, as rospy's TCP
    keepalive resets them; returns how many there were and how long it took.

    rospy turns on keepalive: a probe after 60 s without traffic, then every 10 s. The killed node's side of each
    connection lingers in FIN-WAIT-2 for tcp_fin_timeout (60 s) and answers a probe with an ACK, which starts the
    60 s again: a reset comes 60 to 130 s after the kill (the "about two minutes" seen in the field), and then the
    next send on the connection fails with EPIPE. `ss -K` removes the lingering sockets at once (it needs
    CAP_NET_ADMIN; without it this only waits longer), so each connection is reset by its first probe, 60 s after
    the kill. Nothing shorter does the same: `ss -K` on the client's side gives ECONNABORTED, which rospy passes on as
    an OSError without closing its side of the connection (the fault would not show).
    """
    def ss(*arguments):
        return subprocess.run(["ss", "-tnH", *arguments], capture_output=True, text=True, timeout=30,
                              check=True).stdout.splitlines()

    def connections():
        return ss("dst", f"127.0.0.1:{port}")

    started = time.monotonic()
    while ss("state", "listening", "src", f"127.0.0.1:{port}"):  # a SIGKILL is not done at once
        if time.monotonic() - started > 10:
            raise RuntimeError(f"port {port} still listens: its node was not killed")
        time.sleep(0.1)
    found = connections()
    # only the dead node's lingering sockets: removing a live one would reset the other side at once (ECONNRESET),
    # another fault than the one the keepalive brings
    ss("-K", "state", "fin-wait-2", "state", "time-wait", "src", f"127.0.0.1:{port}")
    while connections():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"connections to port {port} still open after {timeout} s: {connections()}")
        time.sleep(1.0)
    return len(found), time.monotonic() - started


def voluntary_switches(pid):
    """How often the process's main thread has gone to sleep (each wakeup from a sleep counts one): an idle node's
    cost, read from /proc."""
    with open(f"/proc/{pid}/task/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


class RosMaster:
    """roscore on a free port; start() points this process's ROS_MASTER_URI (and its children's) at it."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.port = 0
        self.process = None
        self.environment = {}

    def start(self, timeout=60):
        """Start roscore and wait until it answers."""
        self.port = free_port()
        ros_home = os.path.join(self.workdir, "ros_home")
        os.makedirs(ros_home, exist_ok=True)
        self.environment = {"ROS_MASTER_URI": f"http://127.0.0.1:{self.port}", "ROS_HOME": ros_home,
                            "ROS_IP": "127.0.0.1"}
        self._saved = {name: os.environ.get(name) for name in self.environment}
        os.environ.update(self.environment)
        log = open(os.path.join(self.workdir, "roscore.log"), "a")
        self.process = subprocess.Popen(["roscore", "-p", str(self.port)], stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_port(self.port, timeout)
        return self

    def processes(self):
        """rosmaster, rosout and roscore itself, for CPU accounting."""
        if self.process is None:
            return []
        root = psutil.Process(self.process.pid)
        return [root] + root.children(recursive=True)

    def stop(self):
        """Stop roscore and everything it started."""
        if self.process is not None:
            _end_group(self.process)
            self.process = None
            for name, value in self._saved.items():  # give later code in this process its own ROS setting back
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _end_group(process, timeout=20):
    """SIGINT to the process group (roslaunch shuts its nodes down on it), then SIGKILL what is left."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)


class Launch:
    """`roslaunch filesync sync.launch config:=<file>` with the given config mapping; nodes respawn after a kill.

    By default it joins the master this process points at (a RosMaster started before). With own_master=True it is
    started the way users start it: roslaunch brings up its own rosmaster and rosout on a free port (and its own
    ROS_HOME under workdir); this process's ROS settings stay as they are.
    """

    def __init__(self, workdir, config, respawn_delay=1.0, name="launch", own_master=False):
        self.workdir, self.config = workdir, config
        self.respawn_delay = respawn_delay
        self.name = name
        self.own_master = own_master
        self.process = None
        self.started_at = None

    def start(self):
        """Write the config file and start roslaunch (without own_master the master must run already)."""
        path = os.path.join(self.workdir, f"{self.name}.yaml")
        with open(path, "w", encoding="utf-8") as handle:
            yaml.safe_dump(self.config, handle)
        log = open(os.path.join(self.workdir, f"{self.name}.log"), "a")
        command = ["roslaunch", "--wait", "filesync", "sync.launch"]
        environment = None
        if self.own_master:
            port = free_port()
            ros_home = os.path.join(self.workdir, f"{self.name}_ros_home")
            os.makedirs(ros_home, exist_ok=True)
            environment = dict(os.environ, ROS_MASTER_URI=f"http://127.0.0.1:{port}", ROS_HOME=ros_home,
                               ROS_IP="127.0.0.1")
            command = ["roslaunch", "-p", str(port), "filesync", "sync.launch"]
        self.started_at = time.time()
        self.process = subprocess.Popen(
            command + [f"config:={path}", f"respawn_delay:={self.respawn_delay}"], stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, env=environment)
        return self

    def node_processes(self):
        """{node name: psutil.Process} of sync.launch's nodes running now (not rosout, with own_master)."""
        found = {}
        if self.process is None:
            return found
        names = set(launch_nodes())
        try:
            children = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return found
        for child in children:
            try:
                arguments = child.cmdline()
            except psutil.Error:
                continue
            for argument in arguments:
                if argument.startswith("__name:=") and argument.split("=", 1)[1] in names:
                    found[argument.split("=", 1)[1]] = child
        return found

    def processes(self):
        """roslaunch and its nodes, for CPU accounting."""
        if self.process is None:
            return []
        root = psutil.Process(self.process.pid)
        return [root] + root.children(recursive=True)

    def wait_nodes(self, names=None, timeout=60):
        """Wait until every named node process runs (default: all of sync.launch's)."""
        names = names or launch_nodes()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if set(names) <= set(self.node_processes()):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"roslaunch ended (rc {self.process.returncode}); see {self.name}.log")
            time.sleep(0.1)
        raise RuntimeError(f"nodes not all up after {timeout} s: {sorted(self.node_processes())}")

    def kill_node(self, name):
        """SIGKILL one node (roslaunch starts it again after respawn_delay). True if it was running."""
        process = self.node_processes().get(name)
        if process is None:
            return False
        try:
            process.kill()
        except psutil.NoSuchProcess:
            return False
        return True

    def stop(self):
        """Shut the launch down."""
        if self.process is not None:
            _end_group(self.process)
            self.process = None


def peak_rss(process):
    """The process's peak resident set size in bytes (VmHWM), or None if it is gone."""
    try:
        with open(f"/proc/{process.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(processes):
    """User + system CPU seconds of the processes (those gone are skipped)."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


@contextmanager
def quiet_stderr(path):
    """Send this process's stderr (and so that of children started inside) to `path` for the block.

    The test FTP server logs every command to its inherited stderr; in a benchmark or a soak that floods the output.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
