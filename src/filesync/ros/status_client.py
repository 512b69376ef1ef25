"""The operator views' link to ROS: the status and events topics in, the ledger's manage service out.

Shared by the rqt plugin (and its stand-alone window) and the web node; the views themselves (filesync.ui) know
nothing of ROS. Nothing here polls: a view is handed on when a status or an event arrives.
"""
import threading

import rospy

from filesync.cli import Unavailable
from filesync.ros.cli_backend import LedgerClient
from filesync.msg import FileEvent, Status
from filesync.ros.node import EVENTS_TOPIC
from filesync.ros_common.ledger_actions import LedgerActions as SharedLedgerActions
from filesync.status import apply_event, status_view

STATUS_TOPIC = "/filesync/status"
ACTION_TIMEOUT = 5.0  # seconds a retry or forget waits for the ledger


class StatusClient:
    """Calls on_view(view) with a fresh status_view() on each /filesync/status, and again when a /filesync/events
    message changes what it shows (a file parked or put back in line between two statuses)."""

    def __init__(self, on_view):
        self.on_view = on_view
        self.view = None
        self._lock = threading.Lock()
        self._subscribers = [rospy.Subscriber(STATUS_TOPIC, Status, self._on_status, queue_size=1),
                             rospy.Subscriber(EVENTS_TOPIC, FileEvent, self._on_event, queue_size=100)]

    def _on_status(self, message):
        view = status_view(message)
        with self._lock:
            self.view = view
        self.on_view(view)

    def _on_event(self, event):
        with self._lock:
            changed = self.view is not None and apply_event(self.view, event)
            view = self.view
        if changed:
            self.on_view(view)

    def close(self):
        """Stop listening."""
        for subscriber in self._subscribers:
            subscriber.unregister()


class LedgerActions(SharedLedgerActions):
    """Retry and forget through the ledger's ROS 1 manage service (see filesync.ros_common.ledger_actions)."""

    def __init__(self, timeout=ACTION_TIMEOUT):
        super().__init__(LedgerClient, Unavailable, timeout)
