"""A TCP proxy on 127.0.0.1 that damages what clients send: one byte flipped in the body of every HTTP PUT with a
Content-Length (S3's PutObject and UploadPart: the object's bytes; the headers, and so the signature and the claimed
checksum, stay intact), while `damaging` is set. Other requests (CompleteMultipartUpload's list of parts) and the
answers pass unchanged. It stands for a bad link or a bad NIC between filesync and an S3 store: a store that checks
x-amz-checksum-sha256 refuses such a body; one that does not keeps it.

A body sent without a Content-Length (chunked) ends the parsing: the rest of that connection passes unchanged.
"""
import socket
import socketserver
import threading

BLOCK = 1 << 16


def _body_length(head: bytes) -> int:
    """The request's body length: its Content-Length, 0 without one, -1 for a chunked body."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return -1
        if name == b"content-length":
            length = int(value.strip())
    return length


class DamagingProxy:
    """Listens on 127.0.0.1:`port` and forwards to 127.0.0.1:`upstream_port`; `damaged` counts the bodies changed."""

    def __init__(self, upstream_port, damaging=True):
        self.upstream_port = upstream_port
        self.damaging = damaging
        self.damaged = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                proxy._serve(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self.server.daemon_threads = True
        self.server.allow_reuse_address = True
        self.server.server_bind()
        self.server.server_activate()
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       name="damaging-proxy", daemon=True)
        self.thread.start()

    @property
    def endpoint(self):
        """The proxy's URL, to give a client instead of the store's."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        """Stop listening (connections in progress end with their peers)."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def _serve(self, client):
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=60)
        client.settimeout(60)
        answers = threading.Thread(target=self._pipe, args=(upstream, client), daemon=True)
        answers.start()
        try:
            self._requests(client, upstream)
        except OSError:
            pass  # either side went away
        finally:
            for side in (upstream, client):
                try:
                    side.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            answers.join(5)
            upstream.close()

    @staticmethod
    def _pipe(source, destination):
        try:
            while True:
                data = source.recv(BLOCK)
                if not data:
                    break
                destination.sendall(data)
        except OSError:
            pass
        try:
            destination.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _requests(self, client, upstream):
        """Forward requests one after another, flipping the middle byte of each PUT's body while damaging."""
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = client.recv(BLOCK)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            upstream.sendall(head + b"\r\n\r\n")
            length = _body_length(head)
            if length < 0:  # chunked: pass the rest through as it is
                upstream.sendall(buffer)
                self._pipe(client, upstream)
                return
            flip_at = length // 2 if self.damaging and length and head.startswith(b"PUT ") else -1
            sent = 0
            while sent < length:
                if not buffer:
                    buffer = client.recv(BLOCK)
                    if not buffer:
                        return
                chunk, buffer = buffer[:length - sent], buffer[length - sent:]
                if sent <= flip_at < sent + len(chunk):
                    changed = bytearray(chunk)
                    changed[flip_at - sent] ^= 0xFF
                    chunk = bytes(changed)
                    with self._lock:
                        self.damaged += 1
                upstream.sendall(chunk)
                sent += len(chunk)
