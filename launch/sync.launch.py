"""filesync on ROS 2: ros2 launch filesync sync.launch.py [config:=/path/to/your.yaml]

Every node restarts by itself RESPAWN_DELAY seconds after a crash; the ledger keeps what each was doing (launch_ros
takes the delay as a number, not as a launch argument). Each node reads the YAML file
whose path its `config` parameter holds (ROS 2 parameters cannot hold the file's lists of mappings). Where the launch
system is not installed (PyPI has no launch_ros), `filesync-ros2 run CONFIG` starts the same nodes
(filesync.ros2.supervisor; test/ros2 checks that both name the same nodes and parameters).
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

RESPAWN_DELAY = 2.0
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "config", "default.yaml")


def generate_launch_description():
    """The nodes under /filesync, each with the config parameter, each respawned after RESPAWN_DELAY seconds."""
    config = LaunchConfiguration("config")
    nodes = [("ledger", "ledger_node"), ("lock", "lock_node"), ("ftp_server", "ftp_server_node"),
             ("vehicle", "vehicle_node"), ("finder", "finder_node"), ("downloader", "downloader_node"),
             ("uploader", "uploader_node"), ("status", "status_node"), ("web", "web_node")]
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=DEFAULT_CONFIG, description="filesync's YAML configuration"),
    ] + [Node(package="filesync", executable=executable, name=name, namespace="filesync", output="log",
              parameters=[{"config": config}], respawn=True, respawn_delay=RESPAWN_DELAY)
         for name, executable in nodes])
