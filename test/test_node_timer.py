"""A node's timer outlives an exception in its callback (filesync.ros.node.survive).

rospy ends a Timer whose callback raised: the status node would go on running and publish nothing more, without a
word on /diagnostics. A real roscore and a real rospy node in a subprocess.
"""
import subprocess
import sys

import pytest

from support.launch import NEEDS_ROS_WORKSPACE, RosMaster, ros_workspace_sourced

pytestmark = pytest.mark.skipif(not ros_workspace_sourced(), reason=NEEDS_ROS_WORKSPACE)

NODE = """
import sys, time, rospy
from filesync.ros.node import survive
rospy.init_node("timer_probe", disable_signals=True)
calls = []
def tick(_event):
    calls.append(1)
    if len(calls) == 1:
        raise RuntimeError("a bug in the first tick")
callback = survive(tick, "probe") if sys.argv[1] == "survive" else tick
timer = rospy.Timer(rospy.Duration(0.05), callback)
time.sleep(1.0)
timer.shutdown()
print(len(calls))
"""


def ticks(tmp_path, mode):
    """How many times the probe node's 20 Hz timer fired in one second (RosMaster points the child at itself)."""
    master = RosMaster(str(tmp_path)).start()
    try:
        done = subprocess.run([sys.executable, "-c", NODE, mode], capture_output=True, text=True, timeout=60)
    finally:
        master.stop()
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


def test_rospy_ends_a_timer_whose_callback_raised(tmp_path):
    assert ticks(tmp_path, "plain") == 1  # why survive() exists


def test_a_guarded_timer_goes_on_after_an_exception(tmp_path):
    assert ticks(tmp_path, "survive") >= 10
