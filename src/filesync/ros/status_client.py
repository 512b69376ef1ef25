"""The operator views' link to ROS: the status and events topics in, the ledger's manage service out.

Shared by the rqt plugin (and its stand-alone window) and the web node; the views themselves (filesync.ui) know
nothing of ROS. Nothing here polls: a view is handed on when a status or an event arrives.
"""
import rospy

from filesync.cli import Unavailable
from filesync.ros.cli_backend import LedgerClient
from filesync.msg import FileEvent, Status
from filesync.ros.node import EVENTS_TOPIC
from filesync.ros_common.ledger_actions import LedgerActions as SharedLedgerActions
from filesync.ros_common.live_view import LiveView
from filesync.status import status_view

STATUS_TOPIC = "/filesync/status"
ACTION_TIMEOUT = 5.0  # seconds a retry or forget waits for the ledger


class StatusClient(LiveView):
    """A LiveView of /filesync/status and /filesync/events on ROS 1."""

    def __init__(self, on_view):
        super().__init__(on_view)
        self._subscribers = [rospy.Subscriber(STATUS_TOPIC, Status, lambda message: self.show(status_view(message)),
                                              queue_size=1),
                             rospy.Subscriber(EVENTS_TOPIC, FileEvent, self._on_event, queue_size=100)]

    def close(self):
        """Stop listening."""
        for subscriber in self._subscribers:
            subscriber.unregister()


class LedgerActions(SharedLedgerActions):
    """Retry and forget through the ledger's ROS 1 manage service (see filesync.ros_common.ledger_actions)."""

    def __init__(self, timeout=ACTION_TIMEOUT):
        super().__init__(LedgerClient, Unavailable, timeout)
