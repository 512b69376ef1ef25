"""The rqt plugin's widget (PyQt5, offscreen) against a real roscore and the real sync.launch: a transfer's progress
bar moves, a parked file shows its reason, Retry puts it back in line (the file then reaches the FTP server); the
aggregator the launch starts gives the robot monitor its filesync tree. The widget runs in a process of its own with
rqt's interpreter, as in rqt; its grab() is kept as build/test-artifacts/rqt-plugin.png."""
import json
import os
import subprocess
import sys
import time

import pytest

from support.launch import NEEDS_ROS_WORKSPACE, ros_workspace_sourced
from support.ui_scene import CLASH, Scene, copy_artifact

pytestmark = pytest.mark.skipif(not ros_workspace_sourced(), reason=NEEDS_ROS_WORKSPACE)
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "widget_driver.py")
RQT_PYTHON = "/usr/bin/python3"
AGGREGATED = """
import json, rospy
from diagnostic_msgs.msg import DiagnosticArray
rospy.init_node("aggregated", anonymous=True)
print(json.dumps([status.name for status in rospy.wait_for_message("/diagnostics_agg", DiagnosticArray, 30).status]))
"""


def test_widget_shows_progress_and_the_parked_reason_and_retry_puts_the_file_back_in_line(tmp_path):
    scene = Scene(tmp_path).start()
    screenshot = str(tmp_path / "rqt-plugin.png")
    try:
        environment = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_RUNTIME_DIR=str(tmp_path))
        environment["PYTHONPATH"] = ":".join(p for p in environment.get("PYTHONPATH", "").split(":")
                                             if not p.rstrip("/").endswith("/src"))  # the workspace's filesync
        # rqt runs Debian's /usr/bin/python3, not filesync's venv: what the plugin imports must be there
        result = subprocess.run([RQT_PYTHON, DRIVER, scene.clash_path, screenshot], env=environment,
                                capture_output=True, text=True, timeout=100)
        assert result.returncode == 0, result.stderr[-3000:]
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        values = seen["bar_values"]
        assert len(values) >= 3 and values == sorted(values), f"the progress bar did not move: {seen}"
        assert "already holds a different file" in seen["reason"], seen
        assert seen["screenshot"] and os.path.getsize(screenshot) > 10_000
        copy_artifact(screenshot, "rqt-plugin.png")
        assert seen["retry_button"] == "Retry"
        assert seen["retry_result"] == "file 1 is back in line", seen
        assert seen["parked_after_retry"] == 0, seen
        # the robot monitor's tree: the aggregator sync.launch starts turns /diagnostics into filesync > ...
        names = subprocess.run([sys.executable, "-c", AGGREGATED], capture_output=True, text=True, timeout=60)
        assert names.returncode == 0, names.stderr[-2000:] + scene.logs()
        assert {"/filesync", "/filesync/Sources", "/filesync/Sources/inbox", "/filesync/Targets",
                "/filesync/Targets/ftp", "/filesync/Staging and ledger"} <= set(json.loads(names.stdout)), names.stdout
        deadline = time.monotonic() + 30
        while not scene.uploaded(CLASH):
            assert time.monotonic() < deadline, "the retried file did not reach the server\n" + scene.logs()
            time.sleep(0.2)
    finally:
        scene.stop()
