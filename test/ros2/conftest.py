"""The ROS 2 tests: they run in the ROS 2 venv with filesync_interfaces built (`make test-ros2` sets FILESYNC_ROS2=1 and
the paths); under ROS 1's venv they are not collected (rclpy is not there, and must not be).

Each run gets a DDS domain of its own (ROS_DOMAIN_ID from the pid) and keeps discovery on this machine
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST), so two runs never see each other's nodes and nothing leaves 127.0.0.1.
ROS_PYTHON_CHECK_FIELDS=1 makes every message field assignment check its type, so a wrong type fails here.
"""
import os
import threading

import pytest

if os.environ.get("FILESYNC_ROS2") != "1":
    collect_ignore_glob = ["test_*.py"]
else:
    os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)  # 1..100: valid domain ids, not the default 0
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_PYTHON_CHECK_FIELDS"] = "1"


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
