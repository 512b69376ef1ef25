"""The shared conversions (filesync.ros_common.convert) on ROS 2's messages: a record and a status come back whole
through the wire format, numbers of the other kind included (an int mtime for a float64 field: ROS 2's C conversion
would read it as garbage; with ROS_PYTHON_CHECK_FIELDS=1 the assignment itself fails)."""
from rclpy.serialization import deserialize_message, serialize_message

from filesync import status as status_lib
from filesync.ledger.store import FileRecord, TaskRecord
from filesync.ros_common.convert import record_from_msg, report_from_msg, report_to_msg, status_from_msg, \
    status_to_msg
from filesync.ros2.messages import ROS2, srv, to_sec


def test_a_record_comes_back_whole_through_a_claim_reply():
    tasks = [TaskRecord(7, "download", "inbox", "done", 1000, 2, 12, "slow link", "w1/download", "/staging/a.bin", ""),
             TaskRecord(7, "upload", "ftp", "active", 600, 1, 99.25, "timed out", "w2/upload", "ftp://host/a.bin",
                        '{"upload_id": "u1"}')]
    record = FileRecord(7, "inbox", "dir/a.bin", 1000, 1700000000, "uploading", "late", version=3, sha256="ab" * 32,
                        checksum="mavftp-crc32:2dfd2d88", tasks=tasks)
    reply = ROS2.make(srv.Claim.Response, found=True, file=ROS2.record_to_msg(record),
                      task=ROS2.task_to_msg(tasks[1]))
    back = deserialize_message(serialize_message(reply), srv.Claim.Response)
    assert record_from_msg(back.file) == record
    assert isinstance(back.file.mtime, float) and back.task.note == '{"upload_id": "u1"}'


def test_a_status_and_a_report_come_back_whole():
    status = status_lib.Status(
        stamp=1700000000.25,
        pipelines=[status_lib.PipelineStatus(source="inbox", targets=["ftp", "s3"], found=2, bytes_waiting=5, rate=3)],
        transfers=[status_lib.TransferStatus(file_id=4, source="inbox", path="a", kind="upload", device="ftp",
                                             bytes_done=10, bytes_total=20, rate=1, eta=-1, worker="w", version=2)],
        links=[status_lib.LinkStatus(name="ftp", role="target", up=True, since=1700000000, reported=True)],
        rate=1, bytes_waiting=20, staging_free_bytes=1 << 40, ledger_ok=True, last_error="x", last_error_time=3,
        files_parked=1, parked=[status_lib.ParkedFile(file_id=9, source="inbox", path="b", size=1, reason="why",
                                                      devices=["target ftp"], version=1)])
    message = status_to_msg(ROS2, status)
    back = status_from_msg(deserialize_message(serialize_message(message), type(message)), to_sec)
    assert back == status
    report = status_lib.WorkerReport(node="/filesync/uploader", transfers=status.transfers, links=status.links,
                                     last_error="y", last_error_time=5)
    message = report_to_msg(ROS2, report)
    assert report_from_msg(deserialize_message(serialize_message(message), type(message))) == report
