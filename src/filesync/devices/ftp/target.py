"""An FTP server as a target: upload to <name>.part, resume with SIZE then REST+STOR, check the size, RNFR/RNTO.

A final name that already holds the same bytes counts as done, so a crash between the rename and the ledger's record
neither uploads again nor loops on a failing RNFR. A final name holding different bytes is never overwritten.
"""
import ftplib
import hashlib
import posixpath

from filesync.devices.base import Target, local_checksum
from filesync.devices.ftp.connection import OPTIONS, FtpConnection, size_or_none
from filesync.errors import PermanentError, TransientError
from filesync.paths import PART_SUFFIX

BLOCK = 64 * 1024  # reading back for a comparison
# Sending: 512 MiB to pyftpdlib on loopback went at 1.23-1.34 of curl's rate with 256 KiB blocks, 1.01-1.21 with 64 KiB;
# larger blocks gain little and make progress (and a bandwidth limit) coarse.
STOR_BLOCK = 256 * 1024


class FtpTarget(Target):
    """Uploads into `root` on an FTP server, keeping the source's relative path; directories are made as needed."""

    kind = "ftp"
    OPTIONS = OPTIONS

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        self.connection = FtpConnection(self.options, key)
        self._made_directories = set()

    def _remote(self, path):
        return posixpath.join(self.options["root"], path)

    def probe(self):
        with self.connection.session("probe") as ftp:
            ftp.voidcmd("NOOP")

    def published(self, path, local_path, size):
        final = self._remote(path)
        with self.connection.session(f"SIZE {final}") as ftp:
            held = size_or_none(ftp, final)
            if held is None:
                return None
            if held == size and self._remote_sha256(ftp, final) == local_checksum(local_path, "sha256"):
                return self._location(final)
        raise PermanentError(f"{final} on {self.connection.address} already holds a different file; not overwriting it")

    def _remote_sha256(self, ftp, remote):
        """SHA-256 of a remote file, read back over RETR: pyftpdlib, vsftpd and pure-ftpd offer no hash command."""
        digest = hashlib.sha256()
        ftp.retrbinary(f"RETR {remote}", digest.update, blocksize=BLOCK)
        return digest.hexdigest()

    def held(self, path):
        with self.connection.session("SIZE") as ftp:
            return size_or_none(ftp, self._remote(path) + PART_SUFFIX) or 0

    def discard(self, path):
        with self.connection.session("DELE") as ftp:
            try:
                ftp.delete(self._remote(path) + PART_SUFFIX)
            except ftplib.error_perm:
                pass

    def _make_directories(self, ftp, directory):
        missing = []
        while directory not in ("", "/") and directory not in self._made_directories:
            missing.append(directory)
            directory = posixpath.dirname(directory)
        for directory in reversed(missing):
            try:
                ftp.mkd(directory)
            except ftplib.error_perm as error:
                if not str(error).startswith("550"):  # 550: it exists already
                    raise
            self._made_directories.add(directory)

    def write(self, path, stream, offset, size, progress):
        part = self._remote(path) + PART_SUFFIX
        sent = [offset]

        def sent_block(block):
            sent[0] += len(block)
            progress(sent[0])

        try:
            with self.connection.session(f"STOR {part}") as ftp:
                self._make_directories(ftp, posixpath.dirname(part))
                ftp.storbinary(f"STOR {part}", stream, blocksize=STOR_BLOCK, callback=sent_block,
                               rest=offset or None)
        except BaseException:
            self._made_directories.clear()  # a directory may have gone with the server's state
            raise
        if sent[0] != size:
            raise TransientError(f"sent {sent[0]} of {size} bytes of {path}: the staged copy changed")

    def publish(self, path, local_path, size):
        final = self._remote(path)
        part = final + PART_SUFFIX
        with self.connection.session(f"RNTO {final}") as ftp:
            held = size_or_none(ftp, part)
            if held != size:
                raise TransientError(f"{part} holds {held} bytes after the upload, expected {size}")
            ftp.rename(part, final)
            held = size_or_none(ftp, final)
            if held != size:
                raise TransientError(f"{final} holds {held} bytes after the rename, expected {size}")
        return self._location(final)

    def _location(self, remote):
        return f"ftp://{self.connection.address}{remote if remote.startswith('/') else '/' + remote}"

    def delete(self, path):
        with self.connection.session("DELE") as ftp:
            ftp.delete(self._remote(path))

    def close(self):
        self.connection.close()
        self._made_directories.clear()
