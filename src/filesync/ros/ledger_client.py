"""The ledger node's services behind the same methods as filesync.ledger.Ledger, for workers in other nodes.

A call that fails because the ledger node is away (restarting after a crash), or because its connection broke, waits
for it and tries again on a new connection, for as long as the node runs: every ledger call is idempotent, so
repeating one whose reply was lost is safe. A call the ledger answers with an error (its handler raised) is not
repeated: it raises LedgerError, and the worker's step fails with that reason.
"""
import threading

import rospy

from filesync.errors import Stopping
from filesync.ros.convert import ROS1
from filesync.ros.services import PersistentService, ServiceFailed, ServiceUnreachable
from filesync.ros_common.ledger_client import LedgerMethods, LedgerUnavailable
from filesync.srv import Checkpoint, Claim, ClaimBatch, Finish, FinishBatch, Manage, Query, Register

SERVICES = {"register": Register, "claim": Claim, "claim_batch": ClaimBatch, "checkpoint": Checkpoint,
            "finish": Finish, "finish_batch": FinishBatch, "query": Query, "manage": Manage}


class LedgerError(Exception):
    """The ledger answered a call with an error (its database cannot be written, or a bug in its handler)."""


class RosLedger(LedgerMethods):
    """Client of the ledger node's services under `namespace` (default /filesync/ledger)."""

    def __init__(self, namespace="/filesync/ledger", wait=None):
        super().__init__(ROS1)
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
