"""The operator views' link to ROS: the status and events topics in, the ledger's manage service out.

Shared by the rqt plugin (and its stand-alone window) and the web node; the views themselves (filesync.ui) know
nothing of ROS. Nothing here polls: a view is handed on when a status or an event arrives.
"""
import threading

import rospy

from filesync.cli import LedgerClient, Unavailable
from filesync.msg import FileEvent, Status
from filesync.ros.node import EVENTS_TOPIC
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


class LedgerActions:
    """Retry and forget through the ledger's manage service (the ledger node announces the change on
    /filesync/events, so workers take a retried file at once and the finder lists a forgotten one again)."""

    def __init__(self, timeout=ACTION_TIMEOUT):
        self.timeout = timeout

    def _manage(self, action, file_id, ledger=None):
        try:
            ledger = ledger or LedgerClient(self.timeout)
            ok, message, _ = ledger.manage(action, int(file_id))
        except Unavailable as error:
            return False, str(error)
        return ok, message

    def retry(self, file_id):
        """Put a parked file back in line: (ok, message)."""
        return self._manage("retry", file_id)

    def forget(self, file_id):
        """Drop a file from the ledger: (ok, message)."""
        return self._manage("forget", file_id)

    def retry_all(self):
        """Retry every parked file (all of them, not only those the status lists): (ok, message)."""
        try:
            ledger = LedgerClient(self.timeout)
            failed = ledger.files("failed")
        except Unavailable as error:
            return False, str(error)
        done = [file_id for file_id in (record.id for record in failed)
                if self._manage("retry", file_id, ledger)[0]]
        return len(done) == len(failed), f"{len(done)} of {len(failed)} parked file(s) back in line"
