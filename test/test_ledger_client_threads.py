"""The ledger's ROS client used from several threads at once, as the downloader and uploader nodes do (one thread per
source or target): every thread must get the reply to its own call. And a call the ledger answers with an error
raises it at once.

rospy's ServiceProxy has no lock; threads that shared one persistent connection got each other's replies, so a remove
worker could act on a download's claim and delete a source file before it was copied (found by the soak).
Runs a real roscore and ledger node; the client runs in a subprocess with the workspace's Python path (pytest's
src/ path would hide the generated messages).
"""
import json
import subprocess
import sys

import pytest
import yaml

from support.launch import NEEDS_ROS_WORKSPACE, RosMaster, ros_workspace_sourced

SOURCES, FILES = 4, 150

CLIENT = r"""
import json, sys, threading
import rospy
from filesync.ros.ledger_client import RosLedger

sources, files = int(sys.argv[1]), int(sys.argv[2])
rospy.init_node("ledger_threads_test", anonymous=True, disable_signals=True)
ledger = RosLedger(wait=60)
for index in range(sources):
    ledger.register(f"s{index}", ["t"], True, [(f"f{n:04d}", 10, 1.0) for n in range(files)])
claimed, wrong = [], []

def work(index):
    source, worker = f"s{index}", f"w{index}"
    while True:
        result = ledger.claim("download", source, worker, 30)
        if result is None:
            return
        record, task = result
        if record.source != source or task is None or task.owner != worker or task.state != "active":
            wrong.append([source, record.source, record.path, None if task is None else task.owner])
            return
        claimed.append([source, record.path])
        ledger.checkpoint(record.id, "download", source, worker, 10, 30)
        ledger.finish(record.id, "download", source, worker, "done")

threads = [threading.Thread(target=work, args=(i,)) for i in range(sources)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(300)
print(json.dumps({"claimed": claimed, "wrong": wrong[:10]}), flush=True)
"""


ERROR_CLIENT = r"""
import json, time
import rospy
from filesync.ros.ledger_client import RosLedger

rospy.init_node("ledger_error_test", anonymous=True, disable_signals=True)
ledger = RosLedger(wait=10)
ledger.files()  # the ledger answers
started = time.monotonic()
try:
    ledger.finish(1, "download", "s0", "w0", "no such outcome")
    error = None
except Exception as caught:
    error = caught
print(json.dumps({"error": type(error).__name__, "reason": str(error), "seconds": time.monotonic() - started}))
"""


@pytest.fixture
def ledger_node(tmp_path):
    """A real roscore and ledger node for SOURCES folder sources."""
    master = RosMaster(str(tmp_path)).start()
    ledger = None
    try:
        config = {"staging_dir": str(tmp_path / "staging"), "database": str(tmp_path / "db" / "ledger.db"),
                  "sources": {f"s{i}": {"kind": "folder", "path": str(tmp_path)} for i in range(SOURCES)},
                  "targets": {"t": {"kind": "ftp", "host": "127.0.0.1", "password": "x"}},
                  "pipelines": [{"source": f"s{i}", "targets": ["t"]} for i in range(SOURCES)]}
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        subprocess.run(["rosparam", "load", str(tmp_path / "config.yaml"), "/filesync/config"], check=True,
                       timeout=60)
        relay = subprocess.run(["catkin_find", "--first-only", "--libexec", "filesync", "ledger_node"],
                               capture_output=True, text=True, timeout=60).stdout.strip()
        ledger = subprocess.Popen([relay, "__ns:=/filesync", "__name:=ledger"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        yield ledger
    finally:
        if ledger is not None:
            ledger.kill()
            ledger.wait(10)
        master.stop()


@pytest.mark.skipif(not ros_workspace_sourced(), reason=NEEDS_ROS_WORKSPACE)
def test_threads_sharing_a_ledger_client_each_get_their_own_replies(tmp_path, ledger_node):
    result = subprocess.run([sys.executable, "-c", CLIENT, str(SOURCES), str(FILES)], capture_output=True,
                            text=True, timeout=300, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["wrong"] == [], "a thread got another thread's reply"
    assert sorted(map(tuple, outcome["claimed"])) == sorted(
        (f"s{i}", f"f{n:04d}") for i in range(SOURCES) for n in range(FILES))


@pytest.mark.skipif(not ros_workspace_sourced(), reason=NEEDS_ROS_WORKSPACE)
def test_an_error_the_ledger_answers_is_raised_at_once_with_its_reason(tmp_path, ledger_node):
    """The ledger's handler raises (here: an outcome it does not know, as a bug in a worker would send): the client
    raises LedgerError at once; it took that for an absent ledger and called again and again until its deadline."""
    result = subprocess.run([sys.executable, "-c", ERROR_CLIENT], capture_output=True, text=True, timeout=120,
                            cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["error"] == "LedgerError", outcome
    assert "unknown outcome 'no such outcome'" in outcome["reason"]
    assert outcome["seconds"] < 5, outcome
