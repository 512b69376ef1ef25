"""The wake topic's sender (filesync.ros_common.workers.WakeSender), without ROS: a node's burst of events becomes a
wake or two, and the last event of a burst always leads to a wake sent after it (a worker woken earlier could have
claimed before that file was recorded)."""
import threading
import time
from types import SimpleNamespace

from filesync.ros_common.workers import WakeSender


def event(state, path="a.ulg"):
    return SimpleNamespace(state=state, path=path)


class Sent:
    """What the sender published, with the monotonic time of each."""

    def __init__(self):
        self.events, self.changed = [], threading.Condition()

    def __call__(self, item):
        with self.changed:
            self.events.append((item, time.monotonic()))
            self.changed.notify_all()

    def wait_for(self, count, timeout=5.0):
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.events) >= count, timeout), self.events
        return [item for item, _ in self.events]


def test_a_burst_is_one_wake_at_once_and_one_after_its_last_event():
    sent = Sent()
    sender = WakeSender(sent, every=0.2)
    now = time.monotonic()
    burst = [event("downloaded", f"{index}.jpg") for index in range(8)]
    for offset, item in enumerate(burst):
        sender.offer(item, now + offset * 0.001)
    assert [item.path for item in sent.wait_for(1)] == ["0.jpg"]  # the first goes at once
    time.sleep(0.3)
    assert [item.path for item in sent.wait_for(2)] == ["0.jpg", "7.jpg"]  # the trailing wake names the newest
    last_offered = now + 7 * 0.001
    assert sent.events[1][1] >= last_offered
    time.sleep(0.3)
    assert len(sent.events) == 2  # nothing more: eight files, two wakes


def test_each_state_has_its_own_window_and_other_states_wake_nobody():
    sent = Sent()
    sender = WakeSender(sent, every=0.2)
    now = time.monotonic()
    for state in ("found", "downloading", "downloaded", "uploading", "uploaded", "removed", "failed"):
        sender.offer(event(state), now)
    assert sorted(item.state for item in sent.wait_for(3)) == ["downloaded", "found", "uploaded"]
    time.sleep(0.3)
    assert len(sent.events) == 3  # one each: nothing was held back for a trailing wake


def test_a_forgotten_file_is_always_sent_with_its_name():
    sent = Sent()
    sender = WakeSender(sent, every=10.0)
    now = time.monotonic()
    sender.offer(event("forgotten", "a.ulg"), now)
    sender.offer(event("forgotten", "b.ulg"), now)
    assert [item.path for item in sent.wait_for(2)] == ["a.ulg", "b.ulg"]


def test_after_a_quiet_window_the_next_event_goes_at_once():
    sent = Sent()
    sender = WakeSender(sent, every=0.05)
    sender.offer(event("found", "1"), time.monotonic())
    time.sleep(0.1)
    sender.offer(event("found", "2"), time.monotonic())
    assert [item.path for item in sent.wait_for(2, timeout=0.04)] == ["1", "2"]
