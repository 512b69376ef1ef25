"""A loop's Wake: setting it when a wake is pending already is skipped (a batch of small files wakes every task worker
for each file), and a wake given while the loop works is not lost."""
import threading

from filesync.engine.workers import Loop, Wake


def test_setting_a_pending_wake_again_takes_no_lock_and_notifies_nobody():
    wake = Wake()
    notified = []
    wake._cond.notify_all = lambda: notified.append(1)
    wake.set()
    wake.set()
    wake.set()
    assert wake.is_set() and len(notified) == 1
    wake.clear()
    wake.set()
    assert len(notified) == 2


def test_a_wake_given_while_the_loop_works_runs_one_more_step():
    class Counting(Loop):
        def __init__(self):
            super().__init__("counting", poll_interval=60)
            self.steps = 0
            self.working = threading.Event()
            self.go_on = threading.Event()

        def step(self):
            self.steps += 1
            if self.steps == 1:
                self.working.set()
                self.go_on.wait(10)
            return False

    loop = Counting()
    loop.start()
    try:
        assert loop.working.wait(10)
        loop.wake.set()  # work arrived during the first step
        loop.wake.set()  # and more: one pending wake for both
        loop.go_on.set()
        for _ in range(200):
            if loop.steps >= 2:
                break
            threading.Event().wait(0.01)
        assert loop.steps == 2
    finally:
        loop.stop()
        loop.join(10)
