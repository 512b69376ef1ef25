"""Conversions between the library's records and the package's messages."""
import rospy

from filesync.ledger.store import FileRecord, TaskRecord
from filesync.msg import FileEvent, FileRecord as FileRecordMsg, Task as TaskMsg


def task_to_msg(task):
    """TaskRecord -> filesync/Task."""
    return TaskMsg(kind=task.kind, device=task.device, state=task.state, offset=task.offset, attempts=task.attempts,
                   not_before=task.not_before, error=task.error, owner=task.owner, location=task.location)


def record_to_msg(record):
    """FileRecord -> filesync/FileRecord."""
    return FileRecordMsg(id=record.id, source=record.source, path=record.path, size=record.size, mtime=record.mtime,
                         state=record.state, error=record.error, tasks=[task_to_msg(t) for t in record.tasks])


def record_from_msg(message):
    """filesync/FileRecord -> FileRecord."""
    return FileRecord(id=message.id, source=message.source, path=message.path, size=message.size,
                      mtime=message.mtime, state=message.state, error=message.error,
                      tasks=[TaskRecord(file_id=message.id, kind=t.kind, device=t.device, state=t.state,
                                        offset=t.offset, attempts=t.attempts, not_before=t.not_before, error=t.error,
                                        owner=t.owner, location=t.location) for t in message.tasks])


def file_event(record, task=None, bytes_done=None):
    """A FileEvent announcing `record` (and the task that changed, if any)."""
    event = FileEvent(file_id=record.id, source=record.source, path=record.path, size=record.size,
                      state=record.state, error=record.error)
    event.header.stamp = rospy.Time.now()
    if task is not None:
        event.task, event.device, event.task_state = task.kind, task.device, task.state
        event.attempts, event.location = task.attempts, task.location
        event.error = task.error or record.error
        event.bytes_done = task.offset if bytes_done is None else bytes_done
        if task.state == "done" and task.kind != "remove":
            event.bytes_done = record.size
    return event
