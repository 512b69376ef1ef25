"""Leases for devices that serve one session at a time (a PX4 has one MAVLink FTP session).

A lease has an owner, an expiry and a fencing token that increases with every grant, so a holder that died loses the
device when its lease runs out, and a stale holder can be told apart from the current one. The table persists its
state (write, fsync, rename) so that a restarted lock node neither forgets a live lease nor reuses a token.
"""
import json
import os
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from filesync.errors import TransientError
from filesync.fsutil import fsync_directory


@dataclass
class Grant:
    """The answer to an acquire: granted or not, the token, who holds it and for how long."""
    granted: bool
    token: int
    holder: str
    expires_in: float


class LeaseTable:
    """Leases by resource name. Thread-safe; `clock` is injectable for tests."""

    def __init__(self, state_path=None, clock=time.time):
        self._clock = clock
        self._state_path = state_path
        self._lock = threading.Lock()
        self._leases = {}  # resource -> [owner, expiry (wall clock), token]
        self._last_token = 0
        if state_path and os.path.exists(state_path):
            with open(state_path, encoding="utf-8") as handle:
                state = json.load(handle)
            self._leases = state["leases"]
            self._last_token = state["last_token"]

    def acquire(self, resource: str, owner: str, ttl: float) -> Grant:
        """Grant `resource` to `owner` for `ttl` seconds, or renew it if `owner` holds it already."""
        with self._lock:
            now = self._clock()
            lease = self._leases.get(resource)
            if lease and lease[0] != owner and lease[1] > now:
                return Grant(False, lease[2], lease[0], lease[1] - now)
            if lease and lease[0] == owner and lease[1] > now:
                token = lease[2]
            else:
                self._last_token += 1
                token = self._last_token
            self._leases[resource] = [owner, now + ttl, token]
            self._save()
            return Grant(True, token, owner, ttl)

    def release(self, resource: str, owner: str, token: int) -> bool:
        """End the lease if `owner` still holds it under `token`; a stale release changes nothing."""
        with self._lock:
            lease = self._leases.get(resource)
            if not lease or lease[0] != owner or lease[2] != token:
                return False
            del self._leases[resource]
            self._save()
            return True

    def _save(self):
        if not self._state_path:
            return
        temporary = self._state_path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({"leases": self._leases, "last_token": self._last_token}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._state_path)
        fsync_directory(os.path.dirname(os.path.abspath(self._state_path)))  # the rename itself must survive


class Lease:
    """Hold a resource for the length of a `with` block, renewing in the background until it ends.

    `client` is anything with acquire(resource, owner, ttl) -> Grant and release(resource, owner, token): a LeaseTable
    in-process, or the ROS client of the lock node. Waiting for the resource polls at `poll` seconds up to `timeout`.
    """

    def __init__(self, client, resource, owner, ttl=10.0, timeout=60.0, poll=0.2):
        self.client, self.resource, self.owner, self.ttl = client, resource, owner, ttl
        self.timeout, self.poll = timeout, poll
        self.token = None
        self._stop = threading.Event()
        self._renewer = None
        self.lost = threading.Event()

    def __enter__(self):
        deadline = time.monotonic() + self.timeout
        while True:
            grant = self.client.acquire(self.resource, self.owner, self.ttl)
            if grant.granted:
                break
            if time.monotonic() >= deadline:
                raise TransientError(f"{self.resource} is held by {grant.holder} for {grant.expires_in:.1f} s more")
            self._stop.wait(min(self.poll, max(grant.expires_in, 0.01)))
        self.token = grant.token
        self._renewer = threading.Thread(target=self._renew, name=f"lease-{self.resource}", daemon=True)
        self._renewer.start()
        return self

    def _renew(self):
        while not self._stop.wait(self.ttl / 3):
            try:
                grant = self.client.acquire(self.resource, self.owner, self.ttl)
            except Exception:  # the lock node may be restarting; the lease still has time left
                continue
            if not grant.granted or grant.token != self.token:
                self.lost.set()
                return

    def __exit__(self, *exc):
        self._stop.set()
        self._renewer.join()
        try:
            self.client.release(self.resource, self.owner, self.token)
        except Exception:  # an unreleased lease simply runs out
            pass
        return False


_RESOURCE_LOCKS = {}
_RESOURCE_LOCKS_GUARD = threading.Lock()


def _resource_lock(resource):
    """One lock per resource in this process: every device of the process that uses the resource (a mavros source
    and a mavros target for one vehicle) shares it, as they share the lease owner (the process)."""
    with _RESOURCE_LOCKS_GUARD:
        return _RESOURCE_LOCKS.setdefault(resource, threading.RLock())


@contextmanager
def exclusive(local_lock, context, resource, timeout):
    """Hold `local_lock` (this device's own state), the process's lock on `resource` (its other devices) and, when
    `context` has a lock service, the lease on `resource` (other processes); yields the Lease, or None without a lock
    service. For devices that serve one session."""
    with ExitStack() as stack:
        stack.enter_context(_resource_lock(resource))
        stack.enter_context(local_lock)
        lease = None
        if context is not None and context.lock is not None:
            lease = stack.enter_context(Lease(context.lock, resource, context.owner, timeout=timeout))
        yield lease
