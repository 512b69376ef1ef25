"""What the finder, downloader and uploader nodes of both ROS generations do with the events topic: which file states
wake which node's loops, and what a forgotten file means to them."""
from filesync.engine.workers import Finder, TaskWorker
from filesync.ledger.store import DOWNLOAD, REMOVE, UPLOAD

# Which file states announce work for which node.
WAKES = {"finder": set(), "downloader": {"found", "uploaded"}, "uploader": {"downloaded"}}
KINDS = {"finder": (), "downloader": (DOWNLOAD, REMOVE), "uploader": (UPLOAD,)}


class EventRouter:
    """A worker node's loops, woken by the events that announce work for its role."""

    def __init__(self, role, loops):
        self.role, self.loops = role, loops
        self._finders = [loop for loop in loops if isinstance(loop, Finder)]
        self._task_workers = [loop for loop in loops if isinstance(loop, TaskWorker)]

    def wake_all(self, *_):
        """Wake every loop (an announcement, or the finder's scan service)."""
        for loop in self.loops:
            loop.wake.set()

    def on_event(self, event):
        """A FileEvent: wake the loops it announces work for; a forgotten file is listed again even if it did not
        change (`filesync forget`), and its unfinished uploads are dropped."""
        if event.state in WAKES[self.role]:
            self.wake_all()
        elif event.state == "forgotten":
            for finder in self._finders:
                if finder.source.name == event.source:
                    finder.forget(event.path)
            for worker in self._task_workers:
                worker.forget(event.source, event.path, event.file_id)
