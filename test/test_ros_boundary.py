"""ROS stays at the edge: outside filesync.ros (ROS 1) and filesync.ros2 (ROS 2) no module imports a ROS client
library or generated messages, so the library, the shared adapter code (filesync.ros_common) and the command-line
tool run under either generation (the mavros device too: its calls are made by filesync.ros.mavros_calls or
filesync.ros2.mavros_calls)."""
import ast
import os

SRC = os.path.join(os.path.dirname(__file__), "..", "src", "filesync")
ROS_MODULES = ("rospy", "rosgraph", "rospkg", "rclpy", "filesync.msg", "filesync.srv", "filesync_interfaces",
               "diagnostic_updater", "mavros_msgs")
EDGES = ("ros", "ros2")


def imported_modules(path):
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_no_ros_import_outside_the_adapters():
    found = []
    for directory, folders, files in os.walk(SRC):
        relative = os.path.relpath(directory, SRC)
        if relative.split(os.sep)[0] in EDGES:
            continue
        for name in files:
            path = os.path.join(directory, name)
            if not name.endswith(".py"):
                continue
            found += [(os.path.relpath(path, SRC), module) for module in imported_modules(path)
                      if module.startswith(ROS_MODULES)]
    assert found == []
