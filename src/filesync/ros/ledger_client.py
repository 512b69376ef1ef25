"""The ledger node's services behind the same methods as filesync.ledger.Ledger, for workers in other nodes.

A call that fails because the ledger node is away (restarting after a crash), or because its connection broke, waits
for it and tries again on a new connection, for as long as the node runs: every ledger call is idempotent, so
repeating one whose reply was lost is safe. A call the ledger answers with an error (its handler raised) is not
repeated: it raises LedgerError, and the worker's step fails with that reason.
"""
import threading

import rospy

from filesync.errors import Stopping
from filesync.msg import FoundFile
from filesync.ros.convert import record_from_msg
from filesync.ros.services import PersistentService, ServiceFailed, ServiceUnreachable
from filesync.srv import Checkpoint, Claim, Finish, Manage, Query, Register

SERVICES = {"register": Register, "claim": Claim, "checkpoint": Checkpoint, "finish": Finish, "query": Query,
            "manage": Manage}


class LedgerUnavailable(Exception):
    """The ledger did not answer within the time given."""


class LedgerError(Exception):
    """The ledger answered a call with an error (its database cannot be written, or a bug in its handler)."""


class RosLedger:
    """Client of the ledger node's services under `namespace` (default /filesync/ledger)."""

    def __init__(self, namespace="/filesync/ledger", wait=None):
        self.namespace = namespace.rstrip("/")
        self.wait = wait  # seconds to keep trying; None: until shutdown
        # One set of connections per thread: a rospy ServiceProxy has no lock, so threads sharing a persistent one
        # interleave requests and replies, and a worker could act on another worker's claim (a remove worker got a
        # download's claim and deleted the source before it was copied).
        self._local = threading.local()

    def _call(self, name, **fields):
        service = self._service(name)
        deadline = None if self.wait is None else rospy.get_time() + self.wait
        while not rospy.is_shutdown():
            try:
                return service.call(**fields)
            except ServiceFailed as error:
                raise LedgerError(str(error)) from None
            except ServiceUnreachable as error:
                if deadline is not None and rospy.get_time() > deadline:
                    raise LedgerUnavailable(f"ledger service {service.name} did not answer: {error}") from None
                try:
                    rospy.wait_for_service(service.name, timeout=5.0)
                except rospy.ROSException:
                    rospy.logwarn_throttle(30, f"waiting for the ledger ({service.name})")
        raise Stopping("shutting down")

    def _service(self, name):
        if not hasattr(self._local, "services"):
            self._local.services = {}
        services = self._local.services
        if name not in services:
            # persistent: one TCP connection per service (and thread) instead of one per call
            services[name] = PersistentService(f"{self.namespace}/{name}", SERVICES[name])
        return services[name]

    def register(self, source, targets, delete_after_upload, entries, downloaded=False):
        """See Ledger.register."""
        reply = self._call("register", source=source, targets=list(targets), delete_after_upload=delete_after_upload,
                           files=[FoundFile(*e[:3], e[3] if len(e) > 3 else "", e[4] if len(e) > 4 else "")
                                  for e in entries])
        return [record_from_msg(r) for r in reply.changed]

    def claim(self, kind, device, worker, lease_seconds):
        """See Ledger.claim."""
        reply = self._call("claim", kind=kind, device=device, worker=worker, lease_seconds=lease_seconds)
        if not reply.found:
            return None
        record = record_from_msg(reply.file)
        return record, record.task(kind, device)

    def checkpoint(self, file_id, kind, device, worker, offset, lease_seconds, note=None):
        """See Ledger.checkpoint."""
        return self._call("checkpoint", file_id=file_id, kind=kind, device=device, worker=worker, offset=offset,
                          lease_seconds=lease_seconds, set_note=note is not None, note=note or "").held

    def finish(self, file_id, kind, device, worker, outcome, error="", location="", delay=None, sha256="",
               checksum=""):
        """See Ledger.finish."""
        reply = self._call("finish", file_id=file_id, kind=kind, device=device, worker=worker, outcome=outcome,
                           error=error, location=location, delay=-1.0 if delay is None else delay, sha256=sha256,
                           checksum=checksum)
        return record_from_msg(reply.file) if reply.held else None

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
