"""The lock node on ROS 2: leases for devices that serve one session at a time, as services under /filesync/lock."""
import os

from filesync.fsutil import make_directories
from filesync.lock import LeaseTable
from filesync.ros2.messages import srv
from filesync.ros2.node import LOCK_NAMESPACE, FilesyncNode


def main():
    """Run the lock node; its state (leases and the last token) lives beside the ledger's database."""
    filesync = FilesyncNode("lock")
    config = filesync.config
    make_directories(os.path.dirname(config.database))
    table = LeaseTable(os.path.join(os.path.dirname(config.database), "leases.json"))

    def acquire(request, reply):
        grant = table.acquire(request.resource, request.owner, request.ttl)
        reply.granted, reply.token, reply.holder = grant.granted, grant.token, grant.holder
        reply.expires_in = float(grant.expires_in)
        return reply

    def release(request, reply):
        reply.released = table.release(request.resource, request.owner, request.token)
        return reply

    filesync.node.create_service(srv.Acquire, f"{LOCK_NAMESPACE}/acquire", acquire)
    filesync.node.create_service(srv.Release, f"{LOCK_NAMESPACE}/release", release)
    filesync.wait_for_shutdown()
    filesync.close()


if __name__ == "__main__":
    main()
