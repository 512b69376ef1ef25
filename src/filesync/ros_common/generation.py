"""One ROS generation's message classes and how to build them, handed to the shared code by each adapter."""
import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Callable


def running_generation(context=None) -> str:
    """"1" or "2": the ROS generation filesync runs on. ROS 2 when `context` (a DeviceContext) carries a ROS 2 node
    (ros_node), else ROS_VERSION's (set by each generation's setup script), else ROS 1 when rospy is installed."""
    if getattr(context, "ros_node", None) is not None:
        return "2"
    version = os.environ.get("ROS_VERSION", "")
    if version in ("1", "2"):
        return version
    return "1" if importlib.util.find_spec("rospy") is not None else "2"


def build(message_class, **fields):
    """message_class(**fields): how ROS 1 builds a message from keywords."""
    return message_class(**fields)


@dataclass(frozen=True)
class Generation:
    """What filesync.ros_common needs of a ROS generation.

    msg, srv: the modules holding filesync's messages and services (filesync.msg/.srv, filesync_interfaces.msg/.srv);
    response: service name -> its response class (ROS 1: srv.ClaimResponse, ROS 2: srv.Claim.Response);
    make: (class, **fields) -> message; ROS 2's converts numbers to the field's type (its C conversion reads an int
    given for a float64 as garbage);
    now: () -> a time stamp of now; from_sec: seconds since the epoch -> a time stamp;
    record_to_msg, task_to_msg: FileRecord/TaskRecord -> message (ROS 1 builds these from positional values).
    """

    msg: Any
    srv: Any
    response: Callable
    make: Callable
    now: Callable
    from_sec: Callable
    record_to_msg: Callable
    task_to_msg: Callable
