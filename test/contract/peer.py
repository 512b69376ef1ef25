"""The registry of peers for the device conformance suite (test/contract).

A peer is a device kind with the real thing behind it: a factory, registered with @peer, that starts the server (if
any) in a fresh directory and yields a Peer: how to build the device's Source and/or Target, direct access to the
storage the device's root maps to (to put files there and check them), and how to make the device unreachable and
reachable again. Adding a device is one small module in test/contract/peers/ (conftest imports them all).
"""
import os
from dataclasses import dataclass, field
from typing import Callable, List, Optional


@dataclass
class Peer:
    """A running device under test and direct access to its storage.

    new_source/new_target build the device (keyword arguments override options, e.g. password="wrong"); stop() makes
    it unreachable (kill the server, take the folder away) and start() brings it back. `expect` says what this peer
    must show, so that a check cannot pass by accident: digests (the tuple Target.digests must be), checksum (True: the
    source's checksum() must give a value), start_over (True: the server refuses restarts, write(offset > 0) must
    raise StartOver; False: it must not), holds_partial (an interrupted upload leaves bytes held(); default True),
    part_visible (an upload shows in the storage under paths.part_name before publish; default True), non_utf8 (a
    name that is not UTF-8 must be listed exactly), held_asks_device (held() asks the device, so it fails while the
    device is away; default True).
    `credentials`: the device logs in, so wrong credentials must give AuthRefused.
    `damaging`: where a damaging link can be put in front of the peer (support/damaging_proxy.py), a context manager
    yielding (target, damage): a target that talks through that link, and damage(True/False) to flip a byte of what it
    sends from then on (or stop).
    """
    storage: str
    stop: Callable[[], None]
    start: Callable[[], None]
    new_source: Optional[Callable[..., object]] = None
    new_target: Optional[Callable[..., object]] = None
    expect: dict = field(default_factory=dict)
    credentials: bool = False
    make_sample: Optional[Callable[[str, int], bytes]] = None  # content the device accepts (Flight Review: a ULog)
    fetch_location: Optional[Callable[[str], bytes]] = None  # an upload API's stored bytes at a published location
    damaging: Optional[Callable[[], object]] = None

    def sample(self, name: str, size: int) -> bytes:
        """Distinct bytes for `name` of about `size` that the device takes (random bytes unless the peer says)."""
        if self.make_sample is not None:
            return self.make_sample(name, size)
        import random
        return random.Random(name).randbytes(size)

    def fetch(self, location: str) -> bytes:
        """What an upload API keeps at the `location` publish() returned."""
        return self.fetch_location(location)

    def local(self, name: str) -> bytes:
        """The local path (bytes) of the device's own name `name` (a str, undecodable bytes surrogate-escaped)."""
        return os.path.join(os.fsencode(self.storage), *os.fsencode(name).split(b"/"))

    def put(self, name: str, data: bytes) -> None:
        """Write a file straight into the storage, as somebody else would."""
        path = self.local(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)

    def get(self, name: str) -> Optional[bytes]:
        """The bytes of `name` in the storage, None when there is no such file."""
        try:
            with open(self.local(name), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def remove(self, name: str) -> None:
        """Delete `name` from the storage, as somebody else would."""
        os.remove(self.local(name))


@dataclass
class PeerSpec:
    """A registered peer: `factory(directory)` is a context manager yielding a Peer; `pending()` gives a reason to
    expect failures (a device not ported yet) or ''."""
    name: str
    factory: Callable
    sources: bool
    targets: bool
    pending: Callable[[], str]


PEERS: List[PeerSpec] = []


def peer(name, sources=True, targets=True, pending=lambda: ""):
    """Register a peer factory (a context manager taking a fresh directory and yielding a Peer)."""
    def register(factory):
        PEERS.append(PeerSpec(name, factory, sources, targets, pending))
        return factory
    return register


def move_away(path):
    """stop()/start() for a device that is a local directory: rename it away and back (as a drive unplugged)."""
    away = path + ".away"
    return (lambda: os.rename(path, away)), (lambda: os.rename(away, path))

