"""The ledger node's services behind the same methods as filesync.ledger.Ledger, for workers in other ROS 2 nodes.

A call that fails because the ledger node is away (restarting after a crash) waits for it and sends again, for as long
as the node runs: every ledger call is idempotent, so repeating one whose reply was lost is safe. rclpy's clients may
be called from several threads at once (each call waits on its own future), so one client per service serves all the
worker threads.
"""
import logging
import time

from filesync.ros_common.ledger_client import LedgerMethods, LedgerUnavailable
from filesync.ros2.messages import ROS2, srv
from filesync.ros2.node import CallFailed, call

NAMESPACE = "/filesync/ledger"
SERVICES = {"register": srv.Register, "claim": srv.Claim, "checkpoint": srv.Checkpoint, "finish": srv.Finish,
            "query": srv.Query, "manage": srv.Manage}
WAIT_LOG_PERIOD = 30.0
log = logging.getLogger("filesync.ledger_client")


class RosLedger(LedgerMethods):
    """Client of the ledger node's services under /filesync/ledger for `filesync` (a FilesyncNode)."""

    def __init__(self, filesync, wait=None):
        super().__init__(ROS2)
        self.filesync = filesync
        self.wait = wait  # seconds to keep trying; None: until shutdown
        self._clients = {name: filesync.client(kind, f"{NAMESPACE}/{name}") for name, kind in SERVICES.items()}
        self._logged = 0.0

    def _call(self, name, **fields):
        request = ROS2.make(SERVICES[name].Request, **fields)
        deadline = None if self.wait is None else time.monotonic() + self.wait
        while not self.filesync.finished.is_set():
            try:
                return call(self._clients[name], request)
            except CallFailed as error:
                if deadline is not None and time.monotonic() > deadline:
                    raise LedgerUnavailable(f"ledger service {NAMESPACE}/{name} did not answer: {error}") from None
                if time.monotonic() - self._logged > WAIT_LOG_PERIOD:
                    self._logged = time.monotonic()
                    log.warning(f"waiting for the ledger ({NAMESPACE}/{name}): {error}")
        raise LedgerUnavailable("shutting down")
