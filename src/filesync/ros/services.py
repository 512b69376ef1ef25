"""Calls on other nodes' ROS services that outlive the node behind them (a crash and respawn, a broken connection).

rospy reports a failed call in several ways: ServiceException for most, but a send on a connection that broke while
idle raises TransportTerminated (not a ServiceException, nor a ROSException), and a persistent ServiceProxy then
keeps the closed connection: every later call fails with AttributeError ('NoneType' object has no attribute 'tell').
rospy turns on TCP keepalive (60 s idle, then a probe every 10 s), so a connection to a node that died is reset
about a minute after its last use, and the next call on it fails so. call_service() sorts every failure into
ServiceUnreachable (try again, on a new connection) and ServiceFailed (the node answered with an error: a problem to
show, not an outage); PersistentService drops its connection after any failure.
"""
import rospy
from rospy.exceptions import ROSInternalException

ANSWERED_WITH_ERROR = "responded with an error"  # rospy's text when the service's handler raised


class ServiceUnreachable(Exception):
    """The call did not reach the service, or its answer was lost: the node is away or the connection broke."""


class ServiceFailed(Exception):
    """The service's node answered with an error (its handler raised): calling again may fail alike."""


def call_service(proxy, **fields):
    """proxy(**fields) with rospy's failures sorted into ServiceUnreachable and ServiceFailed.

    A request that cannot be serialized (a bug of the caller) raises rospy's ROSSerializationException unchanged; a
    call cut short by this node's shutdown is ServiceUnreachable.
    """
    try:
        return proxy(**fields)
    except rospy.ROSSerializationException:
        raise
    except rospy.ServiceException as error:
        if ANSWERED_WITH_ERROR in str(error):
            raise ServiceFailed(str(error)) from None
        raise ServiceUnreachable(str(error)) from None
    except (rospy.ROSException, ROSInternalException, OSError) as error:
        raise ServiceUnreachable(f"{type(error).__name__}: {error}") from None


class PersistentService:
    """One idempotent service on a persistent connection (no master lookup and no new connection per call).

    Any failure drops the connection; the next call opens a new one. A call that finds the connection it used before
    broken (the node restarted since) is made once more at once on a new one. Not thread-safe: one per thread.
    """

    def __init__(self, name, kind):
        self.name, self.kind = name, kind
        self._proxy = None

    def call(self, **fields):
        """The service's reply; raises ServiceUnreachable or ServiceFailed (see call_service)."""
        reused = self._proxy is not None
        try:
            return self._call(**fields)
        except ServiceUnreachable:
            if not reused:
                raise
        return self._call(**fields)

    def _call(self, **fields):
        if self._proxy is None:
            self._proxy = rospy.ServiceProxy(self.name, self.kind, persistent=True)
        try:
            return call_service(self._proxy, **fields)
        except BaseException:  # whatever went wrong, the connection's state is unknown: never use it again
            self.close()
            raise

    def close(self):
        """Close the connection, if one is open."""
        if self._proxy is not None:
            proxy, self._proxy = self._proxy, None
            proxy.close()
