"""filesync's ROS 2 nodes under `filesync-ros2 run` (filesync.ros2.supervisor) for the tests: a config file, the
supervisor as a process, its nodes found by name (to kill one with SIGKILL), and a stop that leaves no process; and
the fixtures test_node and scene (import them into the test module) and helpers to wait for files."""
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from types import SimpleNamespace

import psutil
import pytest
import yaml

from conftest import write_file
from filesync.devices.base import local_checksum
from support.ftp_server import FtpServerProcess
from support.launch import free_port

MiB = 1 << 20
CHECKPOINT = 256 * 1024


@pytest.fixture(scope="module")
def test_node(tmp_path_factory):
    """An rclpy node of the test's own (its executor spinning in a thread), for calls and subscriptions."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    os.environ["ROS_LOG_DIR"] = str(tmp_path_factory.mktemp("ros_log"))
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("filesync_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    def spin():
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        executor.shutdown(timeout_sec=5)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        thread.join(10)


class Ros2Stack:
    """The supervisor and its nodes, with `config` (a mapping) written to <workdir>/config.yaml."""

    def __init__(self, workdir, config, respawn_delay=0.5):
        self.workdir, self.respawn_delay = str(workdir), respawn_delay
        self.config_path = os.path.join(self.workdir, "config.yaml")
        temporary = self.config_path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            yaml.safe_dump(config, handle)
        os.replace(temporary, self.config_path)
        self.log_dir = os.path.join(self.workdir, "nodes")
        self.process = None

    def start(self):
        """Start the supervisor; its own output goes to <workdir>/supervisor.log, each node's to nodes/<name>.log."""
        environment = dict(os.environ, ROS_LOG_DIR=os.path.join(self.workdir, "ros_log"))
        with open(os.path.join(self.workdir, "supervisor.log"), "ab") as output:
            self.process = subprocess.Popen(
                ["filesync-ros2", "run", self.config_path, "--log-dir", self.log_dir,
                 "--respawn-delay", str(self.respawn_delay)], stdout=output, stderr=subprocess.STDOUT, env=environment)
        return self

    def node(self, name, timeout=30):
        """The process of node `name` (psutil.Process), waiting for the supervisor to have one running."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in psutil.Process(self.process.pid).children():
                try:
                    if f"__node:={name}" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                        return child
                except psutil.NoSuchProcess:
                    continue
            time.sleep(0.1)
        raise AssertionError(f"no node {name} under the supervisor after {timeout} s")

    def kill(self, name):
        """kill -9 node `name`, as a crash would; returns the pid it had."""
        victim = self.node(name)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        return victim.pid

    def log(self, name):
        """What node `name` wrote (all its runs)."""
        path = os.path.join(self.log_dir, f"{name}.log")
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def stop(self, timeout=40):
        """SIGINT the supervisor (it stops every node) and wait; returns the nodes still alive afterwards (none)."""
        if self.process is None:
            return []
        children = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        alive = [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
        for child in alive:
            child.kill()
        return alive


@pytest.fixture
def scene(tmp_path, test_node):
    """An FTP server, an inbox, the configuration, a ledger client on the test's node; the stack is started by the
    test and stopped here (no node may outlive it)."""
    server = FtpServerProcess(str(tmp_path / "ftp_root"), str(tmp_path / "ftp.log")).start()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = {
        "staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
        "log_dir": str(tmp_path / "logs"), "checkpoint_bytes": CHECKPOINT, "scan_interval": 0.5,
        "poll_interval": 2.0, "lease_seconds": 5.0, "retry_base": 0.2, "retry_cap": 2.0, "bwlimit": 2 * MiB,
        "ros_log_max_total_bytes": MiB,
        "sources": {"inbox": {"kind": "folder", "path": str(inbox), "min_age": 0.0}},
        "targets": {"ftp": server.target_options("/up")},
        "pipelines": [{"source": "inbox", "targets": ["ftp"]}],
        "ftp_server": {"enabled": False},
        "web": {"enabled": True, "host": "127.0.0.1", "port": free_port()},
    }
    stack = Ros2Stack(tmp_path, config)
    from filesync.ros2.ledger_client import RosLedger
    ledger = RosLedger(SimpleNamespace(client=test_node.create_client, finished=threading.Event()), wait=30)
    scene = SimpleNamespace(server=server, inbox=str(inbox), stack=stack, ledger=ledger, node=test_node,
                            workdir=tmp_path, web_port=config["web"]["port"])
    try:
        yield scene
    finally:
        left = stack.stop()
        server.stop()
        assert not left, f"nodes outlived the supervisor: {left}"


def write_inbox(scene, sizes, prefix="f"):
    """Files written whole under a hidden name, then renamed into the inbox."""
    paths = [f"d{i % 2}/{prefix}{i:02d}.bin" for i in range(len(sizes))]
    for path, size in zip(paths, sizes):
        final = os.path.join(scene.inbox, path)
        hidden = os.path.join(os.path.dirname(final), "." + os.path.basename(final))
        write_file(hidden, size, seed=path)
        os.replace(hidden, final)
    return paths


def wait_for(condition, timeout, what):
    """Poll condition() until it returns something true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} after {timeout} s")


def all_uploaded(scene, count):
    records = scene.ledger.files()
    return len(records) == count and all(r.state == "uploaded" for r in records) and records


def assert_arrived(scene, paths):
    for path in paths:
        stored = os.path.join(scene.server.root, "up", path)
        assert local_checksum(stored, "sha256") == local_checksum(os.path.join(scene.inbox, path), "sha256"), path
    publications = Counter(event["path"] for event in scene.server.events("RNTO"))
    assert sorted(publications.values()) == [1] * len(paths), publications
