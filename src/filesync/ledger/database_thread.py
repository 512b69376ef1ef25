"""One thread that makes every call on the ledger, one after the other, for callers in many threads.

The ledger node's rospy connection threads hand their calls to it and wait for their own result. SQLite writes one
transaction at a time anyway; connection threads taking turns on the ledger's lock instead left the database idle a
fifth of the time with two clients, because each woken thread waited for a CPU and for the GIL before its BEGIN. This
thread goes straight from one call to the next. Each call still commits before its caller gets the result.
"""
import queue
import threading


class DatabaseThread:
    """Runs the functions given to call() on one thread in arrival order; each caller waits for its own.

    Leaner than a one-worker ThreadPoolExecutor (no Future, condition or semaphore per call): this thread's time
    between two calls is the ledger node's limit.
    """

    def __init__(self, name="ledger-database"):
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
        while True:
            item = self._calls.get()
            if item is None:
                return
            function, args, outcome = item
            try:
                outcome[1] = function(*args)
            except BaseException as error:  # the caller raises it
                outcome[2] = error
            outcome[0].release()
