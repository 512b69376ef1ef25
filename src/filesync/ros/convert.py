"""Conversions between the library's records and the package's messages."""
import rospy

from filesync.ledger.store import FileRecord, TaskRecord
from filesync.msg import FileEvent, FileRecord as FileRecordMsg, Task as TaskMsg


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


def record_from_msg(message):
    """filesync/FileRecord -> FileRecord."""
    return FileRecord(id=message.id, source=message.source, path=message.path, size=message.size,
                      mtime=message.mtime, state=message.state, error=message.error, version=message.version,
                      sha256=message.sha256, checksum=message.checksum,
                      tasks=[TaskRecord(file_id=message.id, kind=t.kind, device=t.device, state=t.state,
                                        offset=t.offset, attempts=t.attempts, not_before=t.not_before, error=t.error,
                                        owner=t.owner, location=t.location, note=t.note) for t in message.tasks])


def file_event(record, task=None, bytes_done=None):
    """A FileEvent announcing `record` (and the task that changed, if any)."""
    event = FileEvent(file_id=record.id, source=record.source, path=record.path, version=record.version,
                      size=record.size, state=record.state, error=record.error)
    event.header.stamp = rospy.Time.now()
    if task is not None:
        event.task, event.device, event.task_state = task.kind, task.device, task.state
        event.attempts, event.location = task.attempts, task.location
        event.error = task.error or record.error
        event.bytes_done = task.offset if bytes_done is None else bytes_done
        if task.state == "done" and task.kind != "remove":
            event.bytes_done = record.size
    return event
