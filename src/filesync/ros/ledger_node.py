"""The ledger node: the only process that opens the database; offers it as services under /filesync/ledger."""
import rospy

from filesync.ledger.recovery import open_ledger, rebuild_from_staging
from filesync.ros.convert import record_to_msg
from filesync.ros.node import start_node
from filesync.msg import FileRecord as FileRecordMsg, Task as TaskMsg
from filesync.ros.convert import task_to_msg
from filesync.srv import (Checkpoint, CheckpointResponse, Claim, ClaimResponse, Finish, FinishResponse, Manage,
                          ManageResponse, Query, QueryResponse, Register, RegisterResponse)

NAMESPACE = "/filesync/ledger"
QUERY_LIMIT = 1000


class LedgerServices:
    """The service handlers, each one ledger call; the ledger commits before the reply goes out."""

    def __init__(self, ledger):
        self.ledger = ledger

    def register(self, request):
        changed = self.ledger.register(request.source, request.targets, request.delete_after_upload,
                                       [(f.path, f.size, f.mtime) for f in request.files])
        return RegisterResponse(changed=[record_to_msg(r) for r in changed])

    def claim(self, request):
        claimed = self.ledger.claim(request.kind, request.device, request.worker, request.lease_seconds)
        if claimed is None:
            return ClaimResponse(found=False, file=FileRecordMsg(), task=TaskMsg())
        record, task = claimed
        return ClaimResponse(found=True, file=record_to_msg(record), task=task_to_msg(task))

    def checkpoint(self, request):
        return CheckpointResponse(held=self.ledger.checkpoint(request.file_id, request.kind, request.device,
                                                              request.worker, request.offset, request.lease_seconds))

    def finish(self, request):
        record = self.ledger.finish(request.file_id, request.kind, request.device, request.worker, request.outcome,
                                    request.error, request.location, None if request.delay < 0 else request.delay)
        return FinishResponse(held=record is not None, file=record_to_msg(record) if record else FileRecordMsg())

    def query(self, request):
        if request.file_id:
            found = [self.ledger.get(request.file_id)]
        elif request.path:
            found = [self.ledger.find(request.source, request.path)]
        else:
            found = self.ledger.files(request.state, request.source, request.after_id,
                                      min(request.limit or QUERY_LIMIT, QUERY_LIMIT))
        return QueryResponse(files=[record_to_msg(r) for r in found if r is not None])

    def manage(self, request):
        if request.action == "retry":
            record = self.ledger.retry(request.file_id)
            ok = record is not None
            message = f"file {request.file_id} is back in line" if ok else f"no file {request.file_id}"
        elif request.action == "forget":
            record = None
            ok = self.ledger.forget(request.file_id)
            message = f"file {request.file_id} forgotten" if ok else f"no file {request.file_id}"
        else:
            ok, record, message = False, None, f"unknown action {request.action!r} (retry or forget)"
        return ManageResponse(ok=ok, message=message, file=record_to_msg(record) if record else FileRecordMsg())


def main():
    """Run the ledger node."""
    config = start_node("ledger")
    ledger, moved_aside = open_ledger(config.database, retry_base=config.retry_base, retry_cap=config.retry_cap)
    if moved_aside:
        rospy.logerr(f"the ledger database was unreadable; kept it as {moved_aside}, rebuilding from staging")
        rebuild_from_staging(ledger, config)
    handlers = LedgerServices(ledger)
    services = [rospy.Service(f"{NAMESPACE}/{name}", kind, getattr(handlers, name))
                for name, kind in (("register", Register), ("claim", Claim), ("checkpoint", Checkpoint),
                                   ("finish", Finish), ("query", Query), ("manage", Manage))]
    rospy.loginfo(f"ledger at {config.database}: {len(ledger.counts())} source/state groups")
    rospy.spin()
    for service in services:
        service.shutdown()
    ledger.close()
