"""The ledger node's services behind the same methods as filesync.ledger.Ledger: the requests each method sends and
how it reads the reply, for a generation's client that supplies _call(service, **fields) -> reply (RosLedger on ROS 1,
the ROS 2 node's client on ROS 2)."""
from filesync.ros_common.convert import record_from_msg


class LedgerUnavailable(Exception):
    """The ledger did not answer within the time given."""


def _finish_fields(file_id, kind, device, worker, outcome, error="", location="", delay=None, sha256="", checksum=""):
    """The fields of a Finish request (and of a TaskOutcome) for Ledger.finish's arguments."""
    return dict(file_id=file_id, kind=kind, device=device, worker=worker, outcome=outcome, error=error,
                location=location, delay=-1.0 if delay is None else delay, sha256=sha256, checksum=checksum)


class LedgerMethods:
    """Ledger's methods over the ledger node's services; `generation` gives the messages."""

    def __init__(self, generation):
        self.generation = generation

    def _call(self, name, **fields):
        raise NotImplementedError

    def register(self, source, targets, delete_after_upload, entries, downloaded=False):
        """See Ledger.register."""
        found = self.generation.msg.FoundFile
        files = [self.generation.make(found, path=e[0], size=e[1], mtime=e[2], problem=e[3] if len(e) > 3 else "",
                                      checksum=e[4] if len(e) > 4 else "") for e in entries]
        reply = self._call("register", source=source, targets=list(targets), delete_after_upload=delete_after_upload,
                           files=files)
        return [record_from_msg(r) for r in reply.changed]

    def claim(self, kind, device, worker, lease_seconds):
        """See Ledger.claim."""
        reply = self._call("claim", kind=kind, device=device, worker=worker, lease_seconds=lease_seconds)
        if not reply.found:
            return None
        record = record_from_msg(reply.file)
        return record, record.task(kind, device)

    def claim_batch(self, kind, device, worker, lease_seconds, limit, small_bytes, workers=1):
        """See Ledger.claim_batch."""
        reply = self._call("claim_batch", kind=kind, device=device, worker=worker, lease_seconds=lease_seconds,
                           limit=limit, small_bytes=small_bytes, workers=workers)
        records = [record_from_msg(r) for r in reply.files]
        return [(record, record.task(kind, device)) for record in records]

    def checkpoint(self, file_id, kind, device, worker, offset, lease_seconds, note=None):
        """See Ledger.checkpoint."""
        return self._call("checkpoint", file_id=file_id, kind=kind, device=device, worker=worker, offset=offset,
                          lease_seconds=lease_seconds, set_note=note is not None, note=note or "").held

    def finish(self, file_id, kind, device, worker, outcome, error="", location="", delay=None, sha256="",
               checksum=""):
        """See Ledger.finish."""
        reply = self._call("finish", **_finish_fields(file_id, kind, device, worker, outcome, error, location, delay,
                                                      sha256, checksum))
        return record_from_msg(reply.file) if reply.held else None

    def finish_batch(self, calls):
        """See Ledger.finish_batch (`calls`: tuples of finish()'s arguments)."""
        outcome = self.generation.msg.TaskOutcome
        reply = self._call("finish_batch", outcomes=[self.generation.make(outcome, **_finish_fields(*call))
                                                     for call in calls])
        return [record_from_msg(record) if held else None for held, record in zip(reply.held, reply.files)]

    def files(self, state="", source="", after_id=0, limit=0):
        """See Ledger.files."""
        return [record_from_msg(r) for r in self._call("query", state=state, source=source, after_id=after_id,
                                                        limit=limit).files]

    def get(self, file_id):
        """See Ledger.get."""
        found = self._call("query", file_id=file_id).files
        return record_from_msg(found[0]) if found else None

    def manage(self, action, file_id):
        """retry or forget a file; returns (ok, message, record or None)."""
        reply = self._call("manage", action=action, file_id=file_id)
        return reply.ok, reply.message, record_from_msg(reply.file) if reply.file.id else None
