"""The ledger node's services behind the same methods as filesync.ledger.Ledger, for workers in other ROS 2 nodes.

A call that gets no reply (the ledger node was killed with the request, or restarts) is sent again, for as long as the
node runs: every ledger call is idempotent, so repeating one whose reply was lost is safe. The requests sent before
stay pending and the first reply to any of them answers the call: a ledger that is only slow (a large register) is
busy with the first one, and a client that gave it up would never see a reply. The resend interval doubles up to
RESEND_CAP, so a slow ledger gets few repeats. rclpy's clients may be called from several threads at once (each call
waits on its own futures), so one client per service serves all the worker threads.
"""
import logging
import threading
import time

from filesync.ros_common.ledger_client import LedgerMethods, LedgerUnavailable
from filesync.ros2.messages import ROS2, srv
from filesync.ros2.node import CALL_TIMEOUT

NAMESPACE = "/filesync/ledger"
SERVICES = {"register": srv.Register, "claim": srv.Claim, "claim_batch": srv.ClaimBatch, "checkpoint": srv.Checkpoint,
            "finish": srv.Finish, "finish_batch": srv.FinishBatch, "query": srv.Query, "manage": srv.Manage}
WAIT_LOG_PERIOD = 30.0
RESEND_CAP = 60.0  # seconds between two sends of one call at most
log = logging.getLogger("filesync.ledger_client")


class RosLedger(LedgerMethods):
    """Client of the ledger node's services under /filesync/ledger for `filesync` (a FilesyncNode)."""

    def __init__(self, filesync, wait=None, resend_after=CALL_TIMEOUT):
        super().__init__(ROS2)
        self.filesync = filesync
        self.wait = wait  # seconds to keep trying; None: until shutdown
        self.resend_after = resend_after  # seconds without a reply before the first resend
        self._clients = {name: filesync.client(kind, f"{NAMESPACE}/{name}") for name, kind in SERVICES.items()}
        self._logged = 0.0

    def _call(self, name, **fields):
        request = ROS2.make(SERVICES[name].Request, **fields)
        client = self._clients[name]
        deadline = None if self.wait is None else time.monotonic() + self.wait
        replied = threading.Event()
        sent = []  # the futures of every send of this call: the first reply to any answers it
        interval = self.resend_after
        try:
            while not self.filesync.finished.is_set():
                answered = next((future for future in sent if future.done()), None)
                if answered is not None:
                    return answered.result()
                if deadline is not None and time.monotonic() > deadline:
                    raise LedgerUnavailable(f"ledger service {NAMESPACE}/{name} did not answer within {self.wait:g} s")
                if client.service_is_ready() or client.wait_for_service(timeout_sec=min(interval, 5.0)):
                    future = client.call_async(request)
                    future.add_done_callback(lambda _future: replied.set())
                    sent.append(future)
                    if replied.wait(interval):
                        continue
                    interval = min(interval * 2, RESEND_CAP)
                if time.monotonic() - self._logged > WAIT_LOG_PERIOD:
                    self._logged = time.monotonic()
                    log.warning(f"waiting for the ledger ({NAMESPACE}/{name}): no reply yet, {len(sent)} sent")
            raise LedgerUnavailable("shutting down")
        finally:
            for future in sent:
                if not future.done():
                    client.remove_pending_request(future)
