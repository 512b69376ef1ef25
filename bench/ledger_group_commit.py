#!/usr/bin/env python3
"""Group commit on the ledger's DatabaseThread (issue 18, item 3): THREADS caller threads take files through claim,
checkpoint and finish over one DatabaseThread, one call at a time each, with the calls that queue up together run in
one transaction (grouped) and one by one (a commit each), interleaved: transitions/s and calls per commit.

  .venv/bin/python bench/ledger_group_commit.py [THREADS] [SECONDS] [ROUNDS]    (defaults 4 3 3)
"""
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from filesync.ledger.database_thread import DatabaseThread  # noqa: E402
from filesync.ledger.store import Ledger  # noqa: E402

ROWS = 40_000


def run(threads, seconds, grouped):
    """(transitions/s, calls per commit) of one run in a fresh ledger under /var/tmp."""
    workdir = tempfile.mkdtemp(prefix="filesync-group-", dir="/var/tmp")
    ledger = Ledger(os.path.join(workdir, "ledger.db"))
    try:
        ledger.register("inbox", ["ftp"], False, [(f"f{i:06d}", 1000, 1.0) for i in range(ROWS)])
        commits = [0]
        ledger._db.set_trace_callback(lambda statement: commits.__setitem__(0, commits[0] + (statement == "COMMIT")))
        database = DatabaseThread(together=ledger.together if grouped else None)
        done = [0] * threads
        stop = time.monotonic() + seconds

        def work(index):
            worker = f"w{index}"
            while time.monotonic() < stop:
                claimed = database.call(ledger.claim, "download", "inbox", worker, 30)
                if claimed is None:
                    return
                database.call(ledger.checkpoint, claimed[0].id, "download", "inbox", worker, 1000, 30)
                database.call(ledger.finish, claimed[0].id, "download", "inbox", worker, "done")
                done[index] += 1
        callers = [threading.Thread(target=work, args=(index,)) for index in range(threads)]
        started = time.monotonic()
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        span = time.monotonic() - started
        database.stop(30)
        return sum(done) / span, 3 * sum(done) / max(1, commits[0])
    finally:
        ledger.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    threads, seconds, rounds = (int(sys.argv[1]) if len(sys.argv) > 1 else 4,
                                float(sys.argv[2]) if len(sys.argv) > 2 else 3.0,
                                int(sys.argv[3]) if len(sys.argv) > 3 else 3)
    for round_number in range(rounds):
        for grouped in ((False, True) if round_number % 2 == 0 else (True, False)):
            rate, per_commit = run(threads, seconds, grouped)
            print(f"{threads} threads, {'grouped' if grouped else 'one by one'}: {rate:,.0f} transitions/s, "
                  f"{per_commit:.2f} calls a commit, load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
