"""One thread that makes every call on the ledger, one after the other, for callers in many threads.

The ledger node's rospy connection threads hand their calls to it and wait for their own result. SQLite writes one
transaction at a time anyway; connection threads taking turns on the ledger's lock instead left the database idle a
fifth of the time with two clients, because each woken thread waited for a CPU and for the GIL before its BEGIN. This
thread goes straight from one call to the next. Each call still commits before its caller gets the result.

Calls that queued up while one ran go together (group commit): given a `together` context (Ledger.together), they run
in one transaction, each in its own savepoint, and one commit (one fsync of SQLite's WAL) serves them all; every caller
is answered after that commit. A call that raises is undone alone; a group whose commit fails runs again call by call.
"""
import functools
import queue
import threading


MAX_GROUP = 64  # calls in one transaction at most: bounds what the first of them waits for its commit


class DatabaseThread:
    """Runs the functions given to call() on one thread in arrival order; each caller waits for its own.

    Leaner than a one-worker ThreadPoolExecutor (no Future, condition or semaphore per call): this thread's time
    between two calls is the ledger node's limit. `together` (None: each call alone) is a context manager factory
    under which the calls waiting in the queue run as one transaction.
    """

    def __init__(self, name="ledger-database", together=None):
        self._together = together
        self._calls = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call(self, function, *args):
        """function(*args) on this thread: its result, or its exception raised in the caller's thread."""
        done = threading.Lock()
        done.acquire()
        outcome = [done, None, None]  # released when done; the result; the exception
        self._calls.put((function, args, outcome))
        done.acquire()
        if outcome[2] is not None:
            raise outcome[2]
        return outcome[1]

    def stop(self, timeout=None):
        """Finish the calls given so far, then end the thread."""
        self._calls.put(None)
        self._thread.join(timeout)

    def _run(self):
        stopping = False
        while not stopping:
            item = self._calls.get()
            if item is None:
                return
            group = [item]
            while len(group) < MAX_GROUP:
                try:
                    item = self._calls.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                group.append(item)
            if len(group) > 1 and self._together is not None:
                try:
                    with self._together():
                        for call in group:
                            self._run_one(call)
                except BaseException:  # nothing of the group was kept: each call runs again on its own
                    for call in group:
                        self._run_one(call)
            else:
                for call in group:
                    self._run_one(call)
            for _function, _args, outcome in group:
                outcome[0].release()

    @staticmethod
    def _run_one(call):
        function, args, outcome = call
        outcome[1], outcome[2] = None, None
        try:
            outcome[1] = function(*args)
        except BaseException as error:  # the caller raises it
            outcome[2] = error


class GroupedLedger:
    """A ledger for callers in several threads of one process (LocalRunner's loops): every method call runs on one
    DatabaseThread, and calls made at the same time share one commit. Same methods and answers as the ledger."""

    def __init__(self, ledger):
        self.ledger = ledger
        self._database = DatabaseThread("ledger-grouped", together=ledger.together)

    def __getattr__(self, name):
        attribute = getattr(self.ledger, name)  # looked up per call: what the ledger holds now
        if not callable(attribute):
            return attribute
        return lambda *args, **options: self._database.call(functools.partial(getattr(self.ledger, name), **options),
                                                            *args)

    def stop(self):
        """Finish the calls given so far and end the thread (the ledger stays open)."""
        self._database.stop(timeout=30)
