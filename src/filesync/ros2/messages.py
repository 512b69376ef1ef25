"""filesync_interfaces as filesync.ros_common sees it (ROS 2's Generation), and the QoS of filesync's topics.

ROS 2 messages take keywords only, and a number of the wrong kind is not checked by default (ROS_PYTHON_CHECK_FIELDS):
its C conversion would read an int handed for a float64 as garbage, so make() converts every number to its field's
type. The tests run with ROS_PYTHON_CHECK_FIELDS=1.
"""
import functools
import time

import filesync_interfaces.msg as msg
import filesync_interfaces.srv as srv
from builtin_interfaces.msg import Time
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from filesync.ros_common.generation import Generation

# /filesync/status: the last status waits for a subscriber that comes later, as a latched ROS 1 topic's does.
STATUS_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
# /filesync/events: every event reaches every subscriber that is up (they wake workers and refresh views); a late one
# needs none of the old ones (the ledger holds the truth).
EVENTS_QOS = QoSProfile(depth=200, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
# /filesync/workers: the workers' reports, each replaced by the next one a second later.
REPORTS_QOS = QoSProfile(depth=20, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
# /diagnostics: as diagnostic_updater publishes it.
DIAGNOSTICS_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)

_FLOATS = {"float", "double"}
_INTEGERS = {"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "octet"}


@functools.lru_cache(maxsize=None)
def _converters(message_class):
    """field -> the function giving a value that field's type, for the number and boolean fields."""
    converters = {}
    for name, kind in message_class.get_fields_and_field_types().items():
        base = kind.split("<")[-1].rstrip(">") if kind.startswith("sequence<") else kind
        convert = float if base in _FLOATS else int if base in _INTEGERS else bool if base == "boolean" else None
        if convert is not None:
            converters[name] = (lambda values, c=convert: [c(v) for v in values]) if kind.startswith("sequence<") \
                else convert
    return converters


def make(message_class, **fields):
    """message_class(**fields), each number converted to its field's type."""
    converters = _converters(message_class)
    return message_class(**{name: converters[name](value) if name in converters else value
                            for name, value in fields.items()})


def from_sec(seconds):
    """Seconds since the epoch -> builtin_interfaces/Time."""
    whole = int(seconds)
    return Time(sec=whole, nanosec=int((seconds - whole) * 1e9))


def to_sec(stamp):
    """builtin_interfaces/Time -> seconds since the epoch."""
    return stamp.sec + stamp.nanosec / 1e9


def now():
    """builtin_interfaces/Time of now (wall clock, as ROS 1's rospy.Time.now() without simulated time)."""
    return from_sec(time.time())


def task_to_msg(task):
    """TaskRecord -> Task."""
    return make(msg.Task, kind=task.kind, device=task.device, state=task.state, offset=task.offset,
                attempts=task.attempts, not_before=task.not_before, error=task.error, owner=task.owner,
                location=task.location, note=task.note)


def record_to_msg(record):
    """FileRecord -> FileRecord message."""
    return make(msg.FileRecord, id=record.id, source=record.source, path=record.path, size=record.size,
                mtime=record.mtime, state=record.state, error=record.error, version=record.version,
                sha256=record.sha256, checksum=record.checksum, tasks=[task_to_msg(t) for t in record.tasks])


ROS2 = Generation(msg=msg, srv=srv, response=lambda name: getattr(srv, name).Response, make=make, now=now,
                  from_sec=from_sec, record_to_msg=record_to_msg, task_to_msg=task_to_msg)
