"""Many owners taking one lease in turns, recording any moment two of them held it at once."""
import threading
import time

from filesync.lock import Lease


def overlaps_between(client, resource, owners, rounds, hold, poll, timeout, join=120):
    """Each owner takes `resource` `rounds` times (holding it `hold` s); returns the overlaps seen (none expected)."""
    inside, overlaps = [], []

    def use(owner):
        for _ in range(rounds):
            with Lease(client, resource, owner, ttl=5, timeout=timeout, poll=poll):
                inside.append(owner)
                if len(inside) > 1:
                    overlaps.append(tuple(inside))
                time.sleep(hold)
                inside.remove(owner)

    threads = [threading.Thread(target=use, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(join)
    return overlaps
