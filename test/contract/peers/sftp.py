"""SFTP peers: Debian's OpenSSH sshd (support/sshd.py) serving one storage directory as an `sftp` source and target,
once with password authentication and size/read-back verification, once with a key and the server's sha256sum.

The storage belongs to the server's user (uid 4242); put() hands what the test writes to that user, so the device can
replace and delete it as it would a file somebody else uploaded."""
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

from contract.peer import Peer, peer
from filesync.devices import create_source, create_target
from support.sshd import Sshd


@dataclass
class SshPeer(Peer):
    """A Peer whose storage files are owned by the server's user."""
    server: Optional[Sshd] = None

    def put(self, name, data):
        path = self.local(name)
        made = os.path.dirname(path)
        while not os.path.isdir(made):
            made = os.path.dirname(made)
        super().put(name, data)
        for folder in _folders_between(made, os.path.dirname(path)):
            self.server.own(folder)
        self.server.own(path)


def _folders_between(existing, deepest):
    """The folders under `existing` down to `deepest` (both bytes), which put() has just made."""
    folders = []
    while deepest != existing:
        folders.append(deepest)
        deepest = os.path.dirname(deepest)
    return folders


def sftp_peer(directory, auth, **extra):
    server = Sshd(directory)
    server.start()
    options = server.options(auth=auth, **extra)
    return server, SshPeer(storage=server.storage, stop=server.stop, start=server.start, server=server,
                           new_source=lambda **more: create_source("peer", _credentials(options, more)),
                           new_target=lambda **more: create_target("peer", _credentials(options, more)),
                           expect={"digests": ("sha256",) if extra.get("remote_sha256") else (),
                                   "checksum": bool(extra.get("remote_sha256")), "start_over": False,
                                   "non_utf8": True},
                           credentials=True)


def _credentials(options, more):
    """password=... from the suite replaces the peer's way of logging in (a wrong password, and no key)."""
    if "password" in more:
        options = {name: value for name, value in options.items() if name != "key_file"}
    return {**options, **more}


@peer("sftp-openssh-password")
@contextmanager
def openssh_password(directory):
    server, running = sftp_peer(directory, "password")
    try:
        yield running
    finally:
        server.remove()


@peer("sftp-openssh-key-sha256")
@contextmanager
def openssh_key_sha256(directory):
    server, running = sftp_peer(directory, "key", remote_sha256=True)
    try:
        yield running
    finally:
        server.remove()
