"""What the nodes do when there is nothing to do: no wakeups in a node's main thread, and the status node's counts
over one connection to the ledger (no master lookup and no new connection each second). A real roscore and real
nodes; the status client runs in a subprocess with the workspace's Python path (pytest's src/ path would hide the
generated messages). The benchmark measures the CPU (bench/run.py, idle rows); these tests check the mechanisms.
"""
import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

from support.launch import NEEDS_ROS_WORKSPACE, RosMaster, ros_workspace_sourced, voluntary_switches
from support.nodes import Stack

pytestmark = pytest.mark.skipif(not ros_workspace_sourced(), reason=NEEDS_ROS_WORKSPACE)

# A stand-in for the ledger's counts service (the real ledger's counts need its database; this test is about the
# connection): prints the name of the thread serving each call, one thread per connection in rospy.
COUNTS_SERVER = r"""
import sys, threading
import rospy
from filesync.msg import StateCount
from filesync.ros.status_node import COUNTS_SERVICE
from filesync.srv import Counts, CountsResponse

files = int(sys.argv[1])
rospy.init_node("ledger", anonymous=True)

def counts(_request):
    print(threading.current_thread().name, flush=True)
    return CountsResponse(counts=[StateCount(source="inbox", state="found", files=files, bytes=files)])

rospy.Service(COUNTS_SERVICE, Counts, counts)
rospy.spin()
"""

STATUS_CLIENT = r"""
import json, subprocess, sys
import rospy
import yaml
from filesync.config import load_config
from filesync.ros.status_node import COUNTS_SERVICE, StatusNode

rospy.init_node("status_counts_test", anonymous=True, disable_signals=True)
node = StatusNode(load_config(yaml.safe_load(sys.argv[1])))

def start_ledger(files):
    server = subprocess.Popen([sys.executable, "-c", sys.argv[2], str(files)], stdout=subprocess.PIPE, text=True)
    rospy.wait_for_service(COUNTS_SERVICE, 60)
    return server

seen, ledger = {}, None
try:
    ledger = start_ledger(3)
    for _ in range(5):
        node._fetch_counts()
    seen.update(ok=node.ledger_ok, counts=node.counts.get(("inbox", "found")))
    ledger.kill()  # a crash: the connection the status node holds is gone
    threads = ledger.communicate(timeout=30)[0].splitlines()
    seen["threads"] = len(set(threads))
    ledger = start_ledger(7)
    node._fetch_counts()
    seen.update(after_ok=node.ledger_ok, after_counts=node.counts.get(("inbox", "found")))
finally:
    if ledger is not None:
        ledger.kill()
        ledger.wait(30)
print(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in seen.items()}), flush=True)
"""


@pytest.fixture
def ros(tmp_path):
    """A private roscore with filesync's config loaded; yields the config mapping."""
    master = RosMaster(str(tmp_path)).start()
    try:
        config = {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
                  "log_dir": str(tmp_path / "logs"),
                  "sources": {"inbox": {"kind": "folder", "path": str(tmp_path / "inbox")}},
                  "targets": {"ftp": {"kind": "ftp", "host": "127.0.0.1", "password": "x"}},
                  "pipelines": [{"source": "inbox", "targets": ["ftp"]}]}
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        subprocess.run(["rosparam", "load", str(tmp_path / "config.yaml"), "/filesync/config"], check=True,
                       timeout=60)
        yield config
    finally:
        master.stop()


def _wait_registered(name, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = subprocess.run(["rosservice", "list"], capture_output=True, text=True, timeout=60).stdout.split()
        if name in listed:
            return
        time.sleep(0.5)
    raise AssertionError(f"{name} not registered after {timeout} s")


def test_a_node_main_thread_sleeps_until_shutdown_and_ends_on_sigint_and_sigterm(ros, tmp_path):
    # rospy.spin() wakes the main thread twice a second; the nodes wait on an event that shutdown sets
    stack = Stack(str(tmp_path))
    try:
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            stack.start("lock")
            process = stack.processes["lock"]
            _wait_registered("/filesync/lock/acquire")
            time.sleep(1.0)  # let start-up finish
            before = voluntary_switches(process.pid)
            time.sleep(3.0)
            woke = voluntary_switches(process.pid) - before
            assert woke <= 1, f"the lock node's main thread woke {woke} times in 3 s with nothing to do"
            process.send_signal(signal_number)
            assert process.wait(30) == 0
            stack.processes.pop("lock")
    finally:
        stack.stop_all()


def test_status_asks_the_ledger_for_counts_over_one_connection_and_reconnects_after_a_restart(ros, tmp_path):
    result = subprocess.run([sys.executable, "-c", STATUS_CLIENT, json.dumps(ros), COUNTS_SERVER], capture_output=True, text=True,
                            timeout=120, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["ok"] and seen["counts"] == [3, 3]
    assert seen["threads"] == 1, "each counts call opened a connection of its own"
    # the first call after the ledger came back fails on the old connection and is made again on a new one
    assert seen["after_ok"] and seen["after_counts"] == [7, 7]
