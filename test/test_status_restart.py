"""After a restart the status still says what is wrong: with the real sync.launch, a file parked (the FTP server
holds other bytes under its name); then the status node and every worker node are killed and respawned, so no
process remembers the failure. The status's parked files, their reasons and its last error come from the ledger.
Then a normal stop (SIGINT, as Ctrl-C in roslaunch's terminal) during a transfer logs no failure."""
import os
import time

import pytest
import requests

from conftest import write_file_whole
from support.launch import NEEDS_ROS_WORKSPACE, ros_workspace_sourced
from support.ui_scene import BIG, Scene

pytestmark = pytest.mark.skipif(not ros_workspace_sourced(), reason=NEEDS_ROS_WORKSPACE)


def _status(scene):
    try:
        reply = requests.get(f"http://127.0.0.1:{scene.web_port}/api/status", timeout=2)
    except requests.RequestException:
        return None
    return reply.json() if reply.ok else None


def _wait(scene, predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        view = _status(scene)
        if view and predicate(view):
            return view
        assert time.monotonic() < deadline, f"{what} not seen in {timeout} s; last: {view}\n{scene.logs()}"
        time.sleep(0.2)


def test_parked_reasons_and_the_last_error_survive_a_restart_of_every_node_that_saw_them(tmp_path):
    scene = Scene(tmp_path, big_file=False).start()
    try:
        _wait(scene, lambda v: v["parked"] and v["last_error_when"] != "from the ledger", 40, "the parked file")
        started = {name: process.pid for name, process in scene.launch.node_processes().items()}
        for name in ("status", "finder", "downloader", "uploader", "web"):
            assert scene.launch.kill_node(name)
        deadline = time.monotonic() + 30
        while any(scene.launch.node_processes().get(name) is None or
                  scene.launch.node_processes()[name].pid == started[name]
                  for name in ("status", "finder", "downloader", "uploader", "web")):
            assert time.monotonic() < deadline, "the nodes did not come back"
            time.sleep(0.2)
        view = _wait(scene, lambda v: v["parked"], 40, "the parked file after the restart")
        assert view["files_parked"] == 1
        parked = view["parked"][0]
        assert (parked["source"], parked["path"], parked["devices"]) == ("inbox", "clash.bin", "target ftp")
        assert "already holds a different file" in parked["reason"]
        assert view["last_error_when"] == "from the ledger"
        assert view["last_error"].startswith("parked inbox/clash.bin: upload ftp: ")

        write_file_whole(os.path.join(scene.inbox, "late.ulg"), BIG)
        _wait(scene, lambda v: v["transfers"], 40, "a transfer in progress")
        before = {path: len(lines) for path, lines in _logs(tmp_path).items()}  # the kills above logged their own
        scene.stop()
        failures = [f"{path}: {line}" for path, lines in _logs(tmp_path).items()
                    for line in lines[before.get(path, 0):] if "step failed" in line or "Traceback" in line]
        assert not failures, "a normal stop logged failures:\n" + "\n".join(failures[:20])
    finally:
        scene.stop()


def _logs(workdir):
    """{path: lines} of the filesync nodes' logs: their output and rospy's files under ROS_HOME/log, rosout's copy
    of every node's messages, and filesync's own files."""
    logs = {}
    for folder, _, names in os.walk(workdir):
        for name in names:
            if name.startswith(("filesync-", "filesync_", "rosout")) and name.endswith(".log"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8", errors="replace") as handle:
                    logs[os.path.relpath(path, workdir)] = handle.read().splitlines()
    return logs
