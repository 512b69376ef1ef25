"""An FTP server as a target: uploads land under paths.part_name (resumed with SIZE then REST+STOR) and get their final
name by RNFR/RNTO, never over another file unless the engine says replace. A small file (under SMALL_FILE) is sent
whole, with no SIZE of its temporary name before the STOR.

The engine owns the contract (what a final name holding other bytes means, verification); this device does the I/O
and says what the server can do: `digests` comes from the server's FEAT (HASH, XSHA256, XMD5, XCRC: ProFTPD's
mod_digest), and read() streams a final name back where there is no digest. A server that refuses restarts (ProFTPD
without AllowStoreRestart: `451 Append/Restart not permitted`) raises StartOver, so the engine sends from byte 0.
"""
import ftplib
import posixpath
from urllib.parse import quote

from filesync.devices.base import Target, send_blocks
from filesync.devices.ftp.connection import (OPTIONS, FtpConnection, end_data, offered_digests, reply_code,
                                             reply_text, server_digest, size_or_none, tls_context, wire)
from filesync.errors import FinalNameTaken, StartOver, TransientError, Vanished

READ_BLOCK = 256 * 1024
# Sending: 512 MiB to pyftpdlib on loopback went at 1.23-1.34 of curl's rate with 256 KiB blocks, 1.01-1.21 with 64 KiB;
# larger blocks gain little and make progress (and a bandwidth limit) coarse.
STOR_BLOCK = 256 * 1024
# Replies to REST+STOR that mean "not from this offset" rather than "not this file": REST not understood or not
# implemented, an offset beyond what the server holds (554), or a refusal that names the restart (ProFTPD:
# `451 <path>: Append/Restart not permitted, try again`) or the file already there (ProFTPD with AllowOverwrite off,
# even with AllowStoreRestart on: `550 <path>: Overwrite permission denied`).
REST_UNSUPPORTED_CODES = ("500", "501", "502", "504", "554")
REST_REFUSAL_WORDS = ("restart", "append", "overwrite")
# Under this size a file is sent whole: a look at the temporary name before every file costs a round trip a file, while
# sending from byte 0 costs more only where an interrupted attempt left bytes behind, at most what the engine's default
# checkpoint_bytes already lets go again after an interruption. (The look at the final name before sending stays: a
# version published but not recorded before a crash, or a ledger rebuilt from staging, is found there and not sent
# again; publish() alone would find it only after sending it.)
SMALL_FILE = 1 << 20


def refuses_restart(error) -> bool:
    """Whether an ftplib error from opening REST+STOR says the server will not continue an upload."""
    if not isinstance(error, ftplib.Error):
        return False
    text = str(error).lower()
    return reply_code(error) in REST_UNSUPPORTED_CODES or any(word in text for word in REST_REFUSAL_WORDS)


class FtpTarget(Target):
    """Uploads into `root` on an FTP server, keeping the engine's relative path; directories are made as needed.

    Names are written as given (the engine's safe names, valid UTF-8).
    """

    kind = "ftp"
    OPTIONS = OPTIONS
    readable = True
    can_delete = True

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        self.connection = FtpConnection(self.options, key, tls_context(self.options, key))
        self._made_directories = set()

    def _remote(self, path):
        return posixpath.join(self.options["root"], path)

    @property
    def digests(self):
        """The digests the server computes (from its FEAT, asked once per connection; connects if needed)."""
        with self.connection.session("FEAT") as ftp:
            return offered_digests(self.connection.features(ftp))

    def probe(self):
        with self.connection.session("probe") as ftp:
            ftp.voidcmd("NOOP")

    def stat(self, path):
        """SIZE of the final name, None where there is none."""
        final = self._remote(path)
        with self.connection.session(f"SIZE {final}") as ftp:
            return size_or_none(ftp, final)

    def digest(self, path, algorithm):
        """The server's digest of the final name (HASH or an X-command), in filesync's text form."""
        final = self._remote(path)
        with self.connection.session(f"{algorithm} of {final}") as ftp:
            return server_digest(ftp, self.connection.features(ftp), final, algorithm)

    def read(self, path):
        """Stream the final name's bytes (RETR); Vanished when there is no such file."""
        final = self._remote(path)
        with self.connection.session(f"RETR {final}") as ftp:
            ftp.voidcmd("TYPE I")
            try:
                data = ftp.transfercmd(f"RETR {wire(final)}")
            except ftplib.error_perm as error:
                if reply_code(error) == "550":
                    raise Vanished(f"{final} is not on {self.connection.address}: {reply_text(str(error))}") from None
                raise
            with data:
                for block in iter(lambda: data.recv(READ_BLOCK), b""):
                    yield block
                end_data(data)
            ftp.voidresp()

    def sends_whole(self, size):
        """A small file goes from byte 0 without a SIZE of its temporary name first: write() replaces a leftover."""
        return size < SMALL_FILE

    def held(self, path, note=""):
        """SIZE of the upload's temporary name (0 when there is none)."""
        with self.connection.session("SIZE") as ftp:
            return size_or_none(ftp, self._remote(self.part_name(path))) or 0

    def discard(self, path):
        """DELE the upload's temporary name; one that is not there counts as discarded."""
        part = self._remote(self.part_name(path))
        with self.connection.session(f"DELE {part}") as ftp:
            try:
                ftp.delete(wire(part))
            except ftplib.error_perm as error:
                if reply_code(error) != "550" or size_or_none(ftp, part) is not None:
                    raise

    def _make_directories(self, ftp, directory):
        missing = []
        while directory not in ("", "/") and directory not in self._made_directories:
            missing.append(directory)
            directory = posixpath.dirname(directory)
        for directory in reversed(missing):
            try:
                ftp.mkd(wire(directory))
            except ftplib.error_perm as error:
                if reply_code(error) != "550":  # 550: it exists already
                    raise
            self._made_directories.add(directory)

    def write(self, path, stream, offset, size, progress):
        """STOR (REST `offset` first when continuing) the stream to the temporary name, in 256 KiB blocks.

        From byte 0 it replaces what the temporary name holds (a leftover of an interrupted attempt of this version:
        the name carries its id); a server that refuses to store over a file (ProFTPD with AllowOverwrite off) gets
        it deleted first. StartOver where the server refuses to continue at `offset`.
        """
        part = self._remote(self.part_name(path))
        try:
            with self.connection.session(f"STOR {part}") as ftp:
                self._make_directories(ftp, posixpath.dirname(part))
                ftp.voidcmd("TYPE I")
                try:
                    data = ftp.transfercmd(f"STOR {wire(part)}", rest=offset or None)
                except ftplib.Error as error:
                    if offset and refuses_restart(error):
                        raise StartOver(f"{self.connection.address} does not continue uploads "
                                        f"({reply_text(str(error))}): sending {path} from byte 0") from None
                    if offset or not isinstance(error, ftplib.error_perm) or size_or_none(ftp, part) is None:
                        raise
                    ftp.delete(wire(part))  # our leftover, which this server does not store over
                    data = ftp.transfercmd(f"STOR {wire(part)}")
                sent = self._send(ftp, data, stream, offset, progress)
        except BaseException:
            self._made_directories.clear()  # a directory may have gone with the server's state
            raise
        if sent != size:
            raise TransientError(f"sent {sent} of {size} bytes of {path}: the staged copy changed")

    @staticmethod
    def _send(ftp, data, stream, offset, progress) -> int:
        """Send the stream over the open data connection; return the offset reached.

        Written out rather than ftplib's storbinary, which drops the control connection on any error: when our side
        fails (the staged file, or progress() stopping the upload), the server still gets the end of the data and
        answers before we go, so it keeps the bytes that arrived (ProFTPD drops a STOR whose client vanished first)
        and held() lets the next attempt continue from them.
        """
        with data:
            sent, stopped = send_blocks(stream, data.sendall, offset, STOR_BLOCK, progress)
            end_data(data)  # TLS: close it cleanly, as storbinary does
        try:
            ftp.voidresp()
        except ftplib.Error:
            if stopped is None:
                raise
        if stopped is not None:
            raise stopped
        return sent

    def publish(self, path, size, replace=False):
        """RNFR/RNTO the finished upload to its final name; FinalNameTaken if that name holds a file and not replace."""
        final = self._remote(path)
        part = self._remote(self.part_name(path))
        with self.connection.session(f"RNTO {final}") as ftp:
            held = size_or_none(ftp, part)
            if held != size:
                raise TransientError(f"{part} holds {held} bytes after the upload, expected {size}")
            if not replace and size_or_none(ftp, final) is not None:
                raise FinalNameTaken(f"{self.location(path)} already holds a file")
            try:
                ftp.rename(wire(part), wire(final))
            except ftplib.error_perm:
                if not replace or size_or_none(ftp, final) is None:
                    raise
                ftp.delete(wire(final))  # a server whose rename does not replace (ProFTPD with AllowOverwrite off)
                ftp.rename(wire(part), wire(final))
        return self.location(path)  # the engine checks the final name next (its size, the server's digest)

    def location(self, path):
        """ftp://host:port/<root>/<path>, quoted as a URL ('#', '%' and spaces escaped)."""
        remote = self._remote(path)
        return f"ftp://{self.connection.address}{quote(remote if remote.startswith('/') else '/' + remote)}"

    def delete(self, path):
        """DELE the final name; one that is already gone counts as deleted."""
        final = self._remote(path)
        with self.connection.session(f"DELE {final}") as ftp:
            try:
                ftp.delete(wire(final))
            except ftplib.error_perm as error:
                if reply_code(error) != "550" or size_or_none(ftp, final) is not None:
                    raise

    def close(self):
        self.connection.close()
        self._made_directories.clear()
