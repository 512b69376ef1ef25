"""What every filesync node does at start: read the config param, route library logs to rosout, run loops."""
import logging
import sys
import threading

import rospy

from filesync.config import load_config
from filesync.errors import ConfigError, TransientError
from filesync.lock import Grant
from filesync.logs import replace_ros_file_handler, setup_file_logging
from filesync.ros.services import ServiceFailed, ServiceUnreachable, call_service
from filesync.srv import Acquire, Release

CONFIG_PARAM = "/filesync/config"
EVENTS_TOPIC = "/filesync/events"
WAKE_TOPIC = "/filesync/wake"  # the events that make work for the worker nodes (ros_common.workers)
LOCK_NAMESPACE = "/filesync/lock"


class RosoutHandler(logging.Handler):
    """Send the library's Python logging to rosout, so `rqt_console` and the node's log file show it."""

    LEVELS = {logging.DEBUG: rospy.logdebug, logging.INFO: rospy.loginfo, logging.WARNING: rospy.logwarn,
              logging.ERROR: rospy.logerr, logging.CRITICAL: rospy.logfatal}

    def emit(self, record):
        level = max(level for level in self.LEVELS if level <= record.levelno)
        self.LEVELS[level](self.format(record))


def start_node(name):
    """init_node, route logging, and return the checked Config; exit with one line naming the key when it is bad."""
    rospy.init_node(name)
    handler = RosoutHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    library_log = logging.getLogger("filesync")
    library_log.addHandler(handler)
    library_log.setLevel(logging.INFO)
    library_log.propagate = False
    raw = rospy.get_param(rospy.get_param("~config_param", CONFIG_PARAM), None)
    if raw is None:
        fail(f"no configuration: the parameter {CONFIG_PARAM} is not set (load a YAML file into it)")
    try:
        config = load_config(raw)
    except ConfigError as error:
        fail(f"bad configuration: {error}")
    # bounded files: filesync's own log per node name, and rospy's per-process file with the same bounds
    setup_file_logging(config.log_dir, rospy.get_name(), config.log_max_bytes, config.log_backup_count)
    replace_ros_file_handler(config.log_max_bytes, config.log_backup_count)
    return config


def fail(message):
    """Exit the node with one line on stderr (and in rosout)."""
    rospy.logfatal(message)
    sys.stderr.write(f"{rospy.get_name()}: {message}\n")
    sys.exit(2)


class RosLeaseClient:
    """The lock node's services with the acquire/release methods of filesync.lock.LeaseTable."""

    def __init__(self, namespace=LOCK_NAMESPACE):
        self._acquire = rospy.ServiceProxy(f"{namespace}/acquire", Acquire)
        self._release = rospy.ServiceProxy(f"{namespace}/release", Release)

    def acquire(self, resource, owner, ttl):
        """See LeaseTable.acquire; raises TransientError while the lock node is away."""
        try:
            reply = call_service(self._acquire, resource=resource, owner=owner, ttl=ttl)
        except (ServiceUnreachable, ServiceFailed) as error:
            raise TransientError(f"lock service {LOCK_NAMESPACE} does not answer: {error}") from None
        return Grant(reply.granted, reply.token, reply.holder, reply.expires_in)

    def release(self, resource, owner, token):
        """See LeaseTable.release."""
        try:
            return call_service(self._release, resource=resource, owner=owner, token=token).released
        except (ServiceUnreachable, ServiceFailed):
            return False


def wait_for_shutdown():
    """Block until the node shuts down, like rospy.spin() but asleep on an event instead of waking twice a second.

    rospy runs the shutdown hooks on SIGINT/SIGTERM (in this, the main thread, whose wait a signal interrupts) and on
    a shutdown request from the master (in another thread); either sets the event.
    """
    if not rospy.core.is_initialized():
        raise rospy.exceptions.ROSInitException("client code must call rospy.init_node() first")
    finished = threading.Event()
    rospy.on_shutdown(finished.set)  # called at once if the node is already shutting down
    try:
        finished.wait()
    except KeyboardInterrupt:
        rospy.signal_shutdown("keyboard interrupt")


def survive(callback, what):
    """`callback` for a rospy.Timer that logs an exception instead of raising it: rospy ends a timer whose callback
    raised, and the node would go on running without doing `what` again, silently."""
    def guarded(event=None):
        try:
            callback(event)
        except Exception as error:  # noqa: BLE001 (any bug: keep the timer; the log says what failed)
            rospy.logerr_throttle(60, f"{what} failed, trying again at the next tick: {type(error).__name__}: {error}")
    return guarded


def run_loops(loops):
    """Start the loops, wait until shutdown, then stop them and wait."""
    for loop in loops:
        loop.start()
    wait_for_shutdown()
    for loop in loops:
        loop.stop()
    for loop in loops:
        loop.join(10)
