"""Conversions between the library's records and the package's messages."""
import rospy

import filesync.msg
import filesync.srv
from filesync.msg import FileRecord as FileRecordMsg, Task as TaskMsg
from filesync.ros_common.convert import event_message, record_from_msg  # noqa: F401 - the ROS 1 side's converters
from filesync.ros_common.generation import Generation, build


# Messages are built from positional values in the order of their .msg fields: half the cost of keywords, which genpy
# checks one by one (every claim and finish reply carries a record; test_convert checks the order round trip).

def task_to_msg(task):
    """TaskRecord -> filesync/Task."""
    return TaskMsg(task.kind, task.device, task.state, task.offset, task.attempts, task.not_before, task.error,
                   task.owner, task.location, task.note)


def record_to_msg(record):
    """FileRecord -> filesync/FileRecord."""
    return FileRecordMsg(record.id, record.source, record.path, record.size, record.mtime, record.state, record.error,
                         record.version, record.sha256, record.checksum, [task_to_msg(t) for t in record.tasks])


def file_event(record, task=None, bytes_done=None):
    """A FileEvent announcing `record` (and the task that changed, if any)."""
    return event_message(ROS1, record, task, bytes_done)


# filesync.ros_common's view of ROS 1
ROS1 = Generation(msg=filesync.msg, srv=filesync.srv, response=lambda name: getattr(filesync.srv, f"{name}Response"),
                  make=build, now=rospy.Time.now, from_sec=rospy.Time.from_sec, record_to_msg=record_to_msg,
                  task_to_msg=task_to_msg)
