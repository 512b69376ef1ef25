"""The operator views' latest status view for both ROS generations: replaced by each /filesync/status, changed in
place by a /filesync/events message between two statuses; a generation's client only subscribes and converts."""
import threading

from filesync.status import apply_event


class LiveView:
    """Calls on_view(view) with each new status view, and again when an event changes what it shows (a file parked
    or put back in line between two statuses)."""

    def __init__(self, on_view):
        self.on_view = on_view
        self.view = None
        self._lock = threading.Lock()

    def show(self, view):
        """A fresh view from a status message."""
        with self._lock:
            self.view = view
        self.on_view(view)

    def _on_event(self, event):
        with self._lock:
            changed = self.view is not None and apply_event(self.view, event)
            view = self.view
        if changed:
            self.on_view(view)
