"""Leases: one holder at a time, expiry of a dead holder, increasing tokens, persistence across a restart."""
import time

from filesync.lock import Lease, LeaseTable
from support.leases import overlaps_between


def test_one_holder_at_a_time_and_expiry():
    now = [0.0]
    table = LeaseTable(clock=lambda: now[0])
    first = table.acquire("px4", "finder", 10)
    assert first.granted
    refused = table.acquire("px4", "downloader", 10)
    assert not refused.granted and refused.holder == "finder" and refused.expires_in == 10
    now[0] = 5
    renewed = table.acquire("px4", "finder", 10)
    assert renewed.granted and renewed.token == first.token
    now[0] = 16  # finder died: its lease ran out
    second = table.acquire("px4", "downloader", 10)
    assert second.granted and second.token > first.token
    assert not table.release("px4", "finder", first.token)  # a stale holder cannot release the new lease
    assert table.release("px4", "downloader", second.token)


def test_tokens_and_leases_survive_a_restart(tmp_path):
    path = str(tmp_path / "leases.json")
    table = LeaseTable(path)
    grant = table.acquire("px4", "finder", 60)
    restarted = LeaseTable(path)
    assert not restarted.acquire("px4", "downloader", 60).granted
    restarted.release("px4", "finder", grant.token)
    assert restarted.acquire("px4", "downloader", 60).token > grant.token


def test_lease_blocks_never_overlap():
    owners = [f"c{i}" for i in range(4)]
    assert overlaps_between(LeaseTable(), "px4", owners, rounds=20, hold=0.001, poll=0.001, timeout=30, join=60) == []


def test_lease_is_renewed_while_held():
    table = LeaseTable()
    with Lease(table, "px4", "downloader", ttl=0.3) as lease:
        time.sleep(1.0)
        assert not table.acquire("px4", "finder", 1).granted
        assert not lease.lost.is_set()
    assert table.acquire("px4", "finder", 1).granted


def test_two_devices_of_one_process_never_use_one_resource_at_once():
    """A mavros source and a mavros target for one vehicle live in one process with one lease owner: the process's
    lock on the resource keeps them apart (the lease alone would let the same owner in twice)."""
    import threading as threads
    from filesync.devices.base import DeviceContext
    from filesync.lock import LeaseTable, exclusive
    context = DeviceContext(lock=LeaseTable(), owner="/filesync/downloader")
    inside, overlaps = [], []

    def use(local_lock):
        for _ in range(50):
            with exclusive(local_lock, context, "vehicle:px4", timeout=5.0):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                time.sleep(0.001)
                inside.pop()

    workers = [threads.Thread(target=use, args=(threads.Lock(),)) for _ in range(2)]  # each device's own lock
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert overlaps == []
