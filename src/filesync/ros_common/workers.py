"""What the finder, downloader and uploader nodes of both ROS generations do with the wake topic: which file states
wake which node's loops, how often a node sends them, and what a forgotten file means to them.

Every change of a file goes out on /filesync/events, for people and views. The worker nodes do not listen there: five
events a file, each taken apart by every node, cost them more CPU than the files did. They listen on /filesync/wake,
which carries the same FileEvent, but only for the states that make work for another node, at most one per state
every WAKE_EVERY seconds from a node (and every `forgotten`, which names its file)."""
import threading

from filesync.engine.workers import Finder, TaskWorker
from filesync.ledger.store import DOWNLOAD, REMOVE, UPLOAD

# Which file states announce work for which node.
WAKES = {"finder": set(), "downloader": {"found", "uploaded"}, "uploader": {"downloaded"}}
KINDS = {"finder": (), "downloader": (DOWNLOAD, REMOVE), "uploader": (UPLOAD,)}
WAKING_STATES = set().union(*WAKES.values())
WAKE_EVERY = 0.05  # seconds: the longest a node waits for work another node recorded (the first wake goes at once)


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


class WakeSender:
    """Sends the events that wake other nodes: the first of a state at once, those that follow within WAKE_EVERY as
    one more at the end of it. A receiver claims from the ledger, which recorded every file before its event came
    here, so a wake sent after the last event of a state finds all of them: none is missed, a batch costs a wake or
    two instead of one per file. `send` publishes one event; it runs on a caller's thread or on a timer's."""

    def __init__(self, send, every=WAKE_EVERY):
        self._send, self._every = send, every
        self._lock = threading.Lock()
        self._quiet_until = {}  # state -> monotonic time before which its events wait for the trailing wake
        self._waiting = {}  # state -> the newest event held for the trailing wake

    def offer(self, event, now):
        """Consider a FileEvent announced at monotonic time `now`: send it, hold it, or drop it (no node waits for
        its state)."""
        if event.state == "forgotten":
            self._send(event)
            return
        if event.state not in WAKING_STATES:
            return
        with self._lock:
            if now >= self._quiet_until.get(event.state, 0.0):
                self._quiet_until[event.state] = now + self._every
                send = True
            else:
                send = False
                if event.state not in self._waiting:
                    timer = threading.Timer(self._quiet_until[event.state] - now, self._trailing, (event.state,))
                    timer.daemon = True
                    timer.start()
                self._waiting[event.state] = event
        if send:
            self._send(event)

    def _trailing(self, state):
        with self._lock:
            event = self._waiting.pop(state, None)
        if event is not None:
            self._send(event)
