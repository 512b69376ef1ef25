"""The command-line tool's client side on ROS 1 (filesync.cli): the master, the ledger's services, the status topic
and the configuration parameter, each with a timeout."""
import socket
import xmlrpc.client

import rosgraph
import rospy

from filesync.cli import LEDGER, PAGE, STATUS_TOPIC, Unavailable, call_with_timeout
from filesync.config import load_config
from filesync.msg import Status
from filesync.srv import Manage, Query

CONFIG_PARAM = "/filesync/config"
DEFAULT_TIMEOUT = 3.0  # the master answers at once; a node it names answers or does not
ERRORS = (rospy.ServiceException, rospy.ROSException, OSError)  # a call that did not answer


def check(timeout):
    """Raise Unavailable when no ROS master answers within `timeout` seconds."""
    uri = rosgraph.get_master_uri()
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # the XML-RPC call to the master uses the default socket timeout
    try:
        rosgraph.Master("/filesync_cli").getPid()
    except (OSError, xmlrpc.client.Error, rosgraph.MasterException) as error:
        raise Unavailable(f"no ROS master at {uri} ({error}); start roscore or sync.launch") from None
    finally:
        socket.setdefaulttimeout(previous)


class LedgerClient:
    """One-shot calls to the ledger's services, each with a timeout."""

    def __init__(self, timeout):
        self.timeout = timeout
        service = f"{LEDGER}/query"
        try:
            rospy.wait_for_service(service, timeout=timeout)
        except rospy.ROSException:
            raise Unavailable(f"the ledger ({service}) does not answer: is sync.launch running?") from None

    def _call(self, name, kind, **fields):
        proxy = rospy.ServiceProxy(f"{LEDGER}/{name}", kind)
        try:
            return call_with_timeout(lambda: proxy(**fields), self.timeout, f"the ledger ({LEDGER}/{name})",
                                     ERRORS)
        finally:
            proxy.close()

    def files(self, state="", source="", limit=0):
        """Files in id order (paged through the query service), at most `limit` (0: all)."""
        found, after = [], 0
        while True:
            page = min(PAGE, limit - len(found)) if limit else PAGE
            reply = self._call("query", Query, state=state, source=source, after_id=after, limit=page)
            found += reply.files
            if len(reply.files) < page or (limit and len(found) >= limit):
                return found
            after = reply.files[-1].id

    def manage(self, action, file_id):
        """(ok, message, file message) of a retry or forget."""
        reply = self._call("manage", Manage, action=action, file_id=file_id)
        return reply.ok, reply.message, reply.file


def watch_status(on_status):
    """Call on_status(message) on each /filesync/status; returns the function that stops it."""
    rospy.init_node("filesync_cli", anonymous=True, disable_signals=True, disable_rosout=True,
                    disable_rostime=True)
    subscriber = rospy.Subscriber(STATUS_TOPIC, Status, on_status, queue_size=1)

    def stop():
        subscriber.unregister()
        rospy.signal_shutdown("done")  # rospy's threads would keep the process alive
    return stop


def config(timeout):
    """The configuration the nodes run with (the parameter sync.launch loads)."""
    raw = call_with_timeout(lambda: rospy.get_param(CONFIG_PARAM, None), timeout, "the parameter server", ERRORS)
    if raw is None:
        raise Unavailable(f"no configuration in {CONFIG_PARAM}: is sync.launch running? (or give --config FILE)")
    return load_config(raw)


def close():
    """Nothing to close: each call opened and closed its own connection."""
