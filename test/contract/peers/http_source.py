"""HTTP source peers: Debian's nginx (support/nginx.py) serving the storage folder, listed from its JSON index
(`autoindex_format json`) and from a manifest that the peer writes anew whenever a file is put or removed (with each
file's size, time and SHA-256). Unreachable while nginx is killed. Sources only: an http target is another device."""
import hashlib
import json
import os
from contextlib import contextmanager

from contract.peer import Peer, peer
from filesync.devices import create_source
from support.nginx import Nginx, missing

MANIFEST = "manifest.json"


def nginx_pending():
    return missing() or ""


@peer("nginx-index", targets=False, pending=nginx_pending)
@contextmanager
def nginx_index(directory):
    with Nginx(directory) as server:
        yield Peer(storage=server.root, stop=server.stop, start=server.start,
                   new_source=lambda **extra: create_source("peer", {"kind": "http", "url": server.url(),
                                                                      "connect_timeout": 2.0, **extra}),
                   expect={"checksum": False, "non_utf8": True})


class ManifestPeer(Peer):
    """A Peer whose storage is listed by a manifest (MANIFEST in the storage folder, left out of itself)."""

    def _write_manifest(self):
        files = []
        root = os.fsencode(self.storage)
        for directory, _, names in os.walk(root):
            for name in names:
                local = os.path.join(directory, name)
                path = os.fsdecode(os.path.relpath(local, root))
                if path == MANIFEST:
                    continue
                with open(local, "rb") as handle:
                    data = handle.read()
                # a name that is not UTF-8 goes as Python's surrogate escapes ("\udce9" for the byte 0xE9)
                files.append({"path": path, "size": len(data), "mtime": os.stat(local).st_mtime,
                              "sha256": hashlib.sha256(data).hexdigest()})
        with open(os.path.join(self.storage, MANIFEST + ".new"), "w") as handle:
            json.dump({"files": files}, handle)
        os.replace(os.path.join(self.storage, MANIFEST + ".new"), os.path.join(self.storage, MANIFEST))

    def put(self, name, data):
        super().put(name, data)
        self._write_manifest()

    def remove(self, name):
        super().remove(name)
        self._write_manifest()


@peer("nginx-manifest", targets=False, pending=nginx_pending)
@contextmanager
def nginx_manifest(directory):
    with Nginx(directory) as server:
        running = ManifestPeer(storage=server.root, stop=server.stop, start=server.start,
                               new_source=lambda **extra: create_source("peer", {
                                   "kind": "http", "url": server.url(MANIFEST), "connect_timeout": 2.0, **extra}),
                               expect={"checksum": True, "non_utf8": True})
        running._write_manifest()
        yield running
