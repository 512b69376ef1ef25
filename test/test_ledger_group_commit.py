"""Group commit (issue 18, item 3): ledger calls queued together on the DatabaseThread share one transaction and one
commit; each caller is answered only after that commit, a call that fails is undone alone, and a kill -9 during a
burst loses no step whose caller got its answer."""
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from filesync.ledger.database_thread import DatabaseThread
from filesync.ledger.store import Ledger

CALLERS = 8


def _claimed_ledger(path, files):
    ledger = Ledger(path)
    ledger.register("inbox", ["ftp"], False, [(f"f{n}.bin", 10, 1.0) for n in range(files)])
    return ledger, [ledger.claim("download", "inbox", f"w{n}", 30)[0].id for n in range(files)]


def _queue_behind_a_held_call(database_thread, calls):
    """Start one caller thread per call while the database thread is held, so they queue up together; return
    (release, threads, results)."""
    release = threading.Event()
    holder = threading.Thread(target=database_thread.call, args=(release.wait, 30))
    holder.start()
    while database_thread._calls.qsize() > 0:  # the held call has been taken
        time.sleep(0.001)
    results = {}

    def caller(index, function, args):
        try:
            results[index] = database_thread.call(function, *args)
        except Exception as error:  # noqa: BLE001 - the test looks at each caller's own error
            results[index] = error
    threads = [threading.Thread(target=caller, args=(index, *call)) for index, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while database_thread._calls.qsize() < len(calls) and time.monotonic() < deadline:
        time.sleep(0.001)
    return release, [holder, *threads], results


def test_calls_queued_together_share_one_commit_and_a_failing_call_is_undone_alone(tmp_path):
    path = str(tmp_path / "ledger.db")
    ledger, ids = _claimed_ledger(path, CALLERS)
    commits = []
    ledger._db.set_trace_callback(lambda statement: commits.append(statement) if statement == "COMMIT" else None)
    database_thread = DatabaseThread(together=ledger.together)
    try:
        calls = [(ledger.checkpoint, (file_id, "download", "inbox", f"w{n}", 7, 30)) for n, file_id in enumerate(ids)]
        calls.append((ledger.register, ("inbox", ["ftp"], False, [("partial.bin", 1, 1.0), ("broken",)])))
        release, threads, results = _queue_behind_a_held_call(database_thread, calls)
        del commits[:]
        release.set()
        for thread in threads:
            thread.join(30)
        assert [results[n] for n in range(CALLERS)] == [True] * CALLERS
        assert isinstance(results[CALLERS], ValueError)
        assert len(commits) == 1, f"{CALLERS + 1} calls queued together made {len(commits)} commits"
        other = Ledger(path)  # another connection: committed, not just inside this connection's transaction
        try:
            assert [other.get(file_id).task("download").offset for file_id in ids] == [7] * CALLERS
            assert other.find("inbox", "partial.bin") is None, "the failing call's first insert was kept"
        finally:
            other.close()
    finally:
        database_thread.stop(timeout=30)
        ledger.close()


def test_a_group_whose_commit_fails_runs_each_call_again_on_its_own(tmp_path):
    path = str(tmp_path / "ledger.db")
    ledger, ids = _claimed_ledger(path, 4)

    @contextlib.contextmanager
    def commit_fails():
        with ledger.together():
            yield
            raise sqlite3.OperationalError("disk I/O error")
    database_thread = DatabaseThread(together=commit_fails)
    try:
        calls = [(ledger.finish, (file_id, "download", "inbox", f"w{n}", "done")) for n, file_id in enumerate(ids)]
        release, threads, results = _queue_behind_a_held_call(database_thread, calls)
        release.set()
        for thread in threads:
            thread.join(30)
        assert [results[n].task("download").state for n in range(len(ids))] == ["done"] * len(ids)
        other = Ledger(path)
        try:
            assert [other.get(file_id).task("download").state for file_id in ids] == ["done"] * len(ids)
        finally:
            other.close()
    finally:
        database_thread.stop(timeout=30)
        ledger.close()


BURST = r"""
import sys, threading
from filesync.ledger.database_thread import DatabaseThread
from filesync.ledger.store import Ledger
path, files, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ledger = Ledger(path)
database = DatabaseThread(together=ledger.together)
out = threading.Lock()
def work(index):
    worker = f"w{index}"
    while True:
        claimed = database.call(ledger.claim, "download", "inbox", worker, 300)
        if claimed is None:
            return
        file_id = claimed[0].id
        database.call(ledger.checkpoint, file_id, "download", "inbox", worker, 5, 300)
        if database.call(ledger.finish, file_id, "download", "inbox", worker, "done") is not None:
            with out:
                sys.stdout.write(f"{file_id}\n")
                sys.stdout.flush()
for thread in [threading.Thread(target=work, args=(i,)) for i in range(threads)]:
    thread.start()
"""


def test_a_kill_during_a_burst_loses_no_answered_step(tmp_path):
    path = str(tmp_path / "ledger.db")
    files = 2000
    ledger = Ledger(path)
    ledger.register("inbox", ["ftp"], False, [(f"f{n:05d}.bin", 10, 1.0) for n in range(files)])
    ledger.close()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    process = subprocess.Popen([sys.executable, "-c", BURST, path, str(files), "6"], stdout=subprocess.PIPE, env=env)
    answered = []
    try:
        deadline = time.monotonic() + 60
        while len(answered) < 300 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            answered.append(int(line))
        process.send_signal(signal.SIGKILL)  # mid-burst: the other threads' calls are queued or committing
        answered += [int(line) for line in process.stdout.read().split()]
    finally:
        process.kill()
        process.wait(30)
    assert 300 <= len(answered) < files, f"{len(answered)} answered: the kill did not land in the burst"
    ledger = Ledger(path)
    try:
        lost = [file_id for file_id in answered if ledger.get(file_id).task("download").state != "done"]
    finally:
        ledger.close()
    assert not lost, f"{len(lost)} finishes were answered but are not in the ledger: {lost[:5]}"


def test_a_grouped_ledger_answers_like_the_ledger_from_its_own_thread(tmp_path):
    from filesync.ledger.database_thread import GroupedLedger
    ledger = Ledger(str(tmp_path / "ledger.db"))
    grouped = GroupedLedger(ledger)
    try:
        [record] = grouped.register("inbox", ["ftp"], False, [("a.bin", 10, 1.0)])
        assert grouped.files(state="found") == [ledger.get(record.id)]
        assert grouped.path == ledger.path
    finally:
        grouped.stop()
        ledger.close()
