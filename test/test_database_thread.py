"""DatabaseThread: the ledger node's one thread for ledger calls. Every caller gets its own result (or its own error),
calls run one at a time on that one thread, and each has finished (committed) when its caller gets the result."""
import threading
import time

import pytest

from filesync.ledger.database_thread import DatabaseThread
from filesync.ledger.store import Ledger


@pytest.fixture
def database_thread():
    runner = DatabaseThread()
    try:
        yield runner
    finally:
        runner.stop(timeout=30)


def test_every_caller_gets_its_own_result_from_the_one_thread(database_thread):
    threads_used, running, overlaps = set(), [0], []
    lock = threading.Lock()

    def work(value):
        threads_used.add(threading.get_ident())
        with lock:
            running[0] += 1
            overlaps.append(running[0])
        time.sleep(0.0005)
        with lock:
            running[0] -= 1
        return value * 2

    results = {}

    def caller(index):
        results[index] = [database_thread.call(work, index * 100 + n) for n in range(50)]

    callers = [threading.Thread(target=caller, args=(i,)) for i in range(6)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(60)
    assert results == {i: [(i * 100 + n) * 2 for n in range(50)] for i in range(6)}
    assert len(threads_used) == 1 and threading.get_ident() not in threads_used
    assert max(overlaps) == 1, "two calls ran at once"


def test_an_error_is_raised_in_its_callers_thread_and_the_thread_goes_on(database_thread):
    def fail():
        raise ValueError("unknown outcome 'x'")

    with pytest.raises(ValueError, match="unknown outcome"):
        database_thread.call(fail)
    assert database_thread.call(len, "abc") == 3


def test_a_ledger_call_has_committed_when_its_caller_gets_the_result(tmp_path, database_thread):
    path = str(tmp_path / "ledger.db")
    ledger = Ledger(path)
    try:
        database_thread.call(ledger.register, "inbox", ["ftp"], False, [("a.bin", 10, 1.0)])
        record, task = database_thread.call(ledger.claim, "download", "inbox", "w", 30)
        assert database_thread.call(ledger.checkpoint, record.id, "download", "inbox", "w", 5, 30)
        finished = database_thread.call(ledger.finish, record.id, "download", "inbox", "w", "done")
        other = Ledger(path)  # another connection sees it: committed, not just in this connection's transaction
        try:
            assert other.get(record.id).task("download").state == "done" == finished.task("download").state
            assert other.get(record.id).task("download").offset == 5
        finally:
            other.close()
    finally:
        ledger.close()


def test_stop_finishes_the_calls_given_before_it():
    runner = DatabaseThread()
    done = []
    callers = [threading.Thread(target=runner.call, args=(lambda n=n: (time.sleep(0.01), done.append(n)),))
               for n in range(5)]
    for thread in callers:
        thread.start()
    while runner._calls.qsize() < 4 and len(done) < 5:
        time.sleep(0.001)
    runner.stop(timeout=30)
    for thread in callers:
        thread.join(30)
    assert sorted(done) == list(range(5))
