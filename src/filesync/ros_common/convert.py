"""Conversions between the library's records and filesync's messages, for both ROS generations."""
from dataclasses import fields

from filesync import status as status_lib
from filesync.ledger.store import FileRecord, TaskRecord


def record_from_msg(message):
    """filesync/FileRecord -> FileRecord."""
    return FileRecord(id=message.id, source=message.source, path=message.path, size=message.size,
                      mtime=message.mtime, state=message.state, error=message.error, version=message.version,
                      sha256=message.sha256, checksum=message.checksum,
                      tasks=[TaskRecord(file_id=message.id, kind=t.kind, device=t.device, state=t.state,
                                        offset=t.offset, attempts=t.attempts, not_before=t.not_before, error=t.error,
                                        owner=t.owner, location=t.location, note=t.note) for t in message.tasks])


def event_message(generation, record, task=None, bytes_done=None):
    """A FileEvent announcing `record` (and the task that changed, if any)."""
    event = generation.make(generation.msg.FileEvent, file_id=record.id, source=record.source, path=record.path,
                            version=record.version, size=record.size, state=record.state, error=record.error)
    event.header.stamp = generation.now()
    if task is not None:
        event.task, event.device, event.task_state = task.kind, task.device, task.state
        event.attempts, event.location = task.attempts, task.location
        event.error = task.error or record.error
        event.bytes_done = task.offset if bytes_done is None else bytes_done
        if task.state == "done" and task.kind != "remove":
            event.bytes_done = record.size
    return event


def field_names(target_class):
    """The fields of a dataclass, a ROS 1 message class (its __slots__) or a ROS 2 one."""
    if hasattr(target_class, "__dataclass_fields__"):
        return [f.name for f in fields(target_class)]
    if hasattr(target_class, "get_fields_and_field_types"):
        return list(target_class.get_fields_and_field_types())
    return target_class.__slots__


def copy(source, target_class, make=None):
    """A message or dataclass of `target_class` with the same-named plain fields of `source`."""
    values = {name: getattr(source, name) for name in field_names(target_class) if hasattr(source, name)}
    return make(target_class, **values) if make else target_class(**values)


def report_to_msg(generation, report):
    """status.WorkerReport -> filesync/WorkerReport."""
    msg, make = generation.msg, generation.make
    message = make(msg.WorkerReport, node=report.node, downloads_held=report.downloads_held,
                   last_error=report.last_error, last_error_time=report.last_error_time,
                   transfers=[copy(t, msg.TransferStatus, make) for t in report.transfers],
                   links=[copy(link, msg.LinkStatus, make) for link in report.links])
    message.header.stamp = generation.now()
    return message


def report_from_msg(message):
    """filesync/WorkerReport -> status.WorkerReport."""
    return status_lib.WorkerReport(node=message.node, downloads_held=message.downloads_held,
                                   last_error=message.last_error, last_error_time=message.last_error_time,
                                   transfers=[copy(t, status_lib.TransferStatus) for t in message.transfers],
                                   links=[copy(link, status_lib.LinkStatus) for link in message.links])


STATUS_VALUES = ("rate", "bytes_waiting", "staging_free_bytes", "staging_min_free_bytes", "downloads_held", "ledger_ok",
                 "ledger_error", "last_error", "last_error_time", "rate_kib_s", "bytes_to_move", "mib_to_move",
                 "files_parked")


def status_to_msg(generation, status):
    """status.Status -> filesync/Status."""
    msg, make = generation.msg, generation.make
    message = make(msg.Status, pipelines=[copy(p, msg.PipelineStatus, make) for p in status.pipelines],
                   transfers=[copy(t, msg.TransferStatus, make) for t in status.transfers],
                   links=[copy(link, msg.LinkStatus, make) for link in status.links],
                   parked=[copy(parked, msg.ParkedFile, make) for parked in status.parked],
                   **{name: getattr(status, name) for name in STATUS_VALUES})
    message.header.stamp = generation.from_sec(status.stamp)
    return message


def status_from_msg(message, seconds):
    """filesync/Status -> status.Status; seconds(stamp) reads the generation's time stamp."""
    return status_lib.Status(stamp=seconds(message.header.stamp),
                             pipelines=[copy(p, status_lib.PipelineStatus) for p in message.pipelines],
                             transfers=[copy(t, status_lib.TransferStatus) for t in message.transfers],
                             links=[copy(link, status_lib.LinkStatus) for link in message.links],
                             parked=[copy(parked, status_lib.ParkedFile) for parked in message.parked],
                             **{name: getattr(message, name) for name in STATUS_VALUES})
