"""The lock node: leases for devices that serve one session at a time, as services under /filesync/lock."""
import os

import rospy

from filesync.fsutil import make_directories
from filesync.lock import LeaseTable
from filesync.ros.node import LOCK_NAMESPACE, start_node, wait_for_shutdown
from filesync.srv import Acquire, AcquireResponse, Release, ReleaseResponse


def main():
    """Run the lock node; its state (leases and the last token) lives beside the ledger's database."""
    config = start_node("lock")
    make_directories(os.path.dirname(config.database))
    table = LeaseTable(os.path.join(os.path.dirname(config.database), "leases.json"))

    def acquire(request):
        grant = table.acquire(request.resource, request.owner, request.ttl)
        return AcquireResponse(granted=grant.granted, token=grant.token, holder=grant.holder,
                               expires_in=grant.expires_in)

    def release(request):
        return ReleaseResponse(released=table.release(request.resource, request.owner, request.token))

    rospy.Service(f"{LOCK_NAMESPACE}/acquire", Acquire, acquire)
    rospy.Service(f"{LOCK_NAMESPACE}/release", Release, release)
    wait_for_shutdown()
