"""A local directory as a source (recursive, include/exclude globs, a minimum age) or as a target."""
import errno
import fnmatch
import os
import re
import stat as stat_mode

from filesync.devices.base import EXCLUDE_HELP, INCLUDE_HELP, RemoteFile, Settling, Source, Target, local_digest
from filesync.errors import DeviceUnavailable, FinalNameTaken, PermanentError, TransientError, Vanished
from filesync.options import Option, expand_path, not_negative
from filesync.paths import PART_SUFFIX

CHUNK = 256 * 1024


def _under(root, path):
    """The local path of relative '/'-separated `path` under `root`."""
    return os.path.join(root, *path.split("/"))


def _matcher(patterns):
    """A function telling whether a relative path or its file name matches any of the glob patterns.

    One compiled expression for the whole list: the finder tests every file of the folder every scan_interval.
    """
    expression = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or "(?!)")

    def matches(path):
        return expression.match(path) is not None or expression.match(path.rsplit("/", 1)[-1]) is not None
    return matches


class FolderSource(Source):
    """Files under a local directory. A file whose size or time changed in the last min_age seconds (of this
    computer's clock, see Settling) is still being written."""

    kind = "folder"
    can_delete = True
    OPTIONS = [
        Option("path", str,
               help="The folder whose files (and subfolders) are taken; ~ and environment variables are expanded."),
        Option("include", list, ["*"], help=INCLUDE_HELP),
        Option("exclude", list, [".*", "*" + PART_SUFFIX], help=EXCLUDE_HELP),
        Option("min_age", float, 2.0, not_negative,
               help="Seconds (of this computer's clock) a file's size and time must stay the same before it counts as"
                    " complete; raise it for writers that pause."),
    ]

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        self.root = expand_path(self.options["path"])
        self._included = _matcher(self.options["include"])
        self._excluded = _matcher(self.options["exclude"])
        self._settling = Settling(self.options["min_age"])

    def probe(self):
        if not os.path.isdir(self.root):
            raise DeviceUnavailable(f"folder {self.root} does not exist")

    def list(self):
        self.probe()
        return self._settling.mark(self._list(self.root, ""))

    def _list(self, directory, prefix):
        """The files of `directory` (sorted), then those of its subfolders (sorted; links to folders not followed).

        One stat per file (scandir knows folders from files without one), no path arithmetic beyond a join.
        """
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError:  # removed or unreadable meanwhile: as os.walk, skip it
            return
        subdirectories = []
        for entry in entries:
            try:
                if entry.is_dir():
                    if not entry.is_symlink():
                        subdirectories.append(entry)
                    continue
            except OSError:
                continue
            relative = prefix + entry.name
            if not self._included(relative) or self._excluded(relative):
                continue
            try:
                status = entry.stat()  # follows a link to a file, as the upload's open() will
            except OSError:
                continue
            if not stat_mode.S_ISREG(status.st_mode):
                continue
            yield RemoteFile(relative, status.st_size, status.st_mtime)
        for entry in subdirectories:
            yield from self._list(entry.path, prefix + entry.name + "/")

    def _gone(self, path):
        """Vanished, or DeviceUnavailable when the whole folder went away (an unmounted share)."""
        self.probe()
        return Vanished(f"{path!r} is no longer in {self.root}")

    def stat(self, path):
        try:
            status = os.stat(_under(self.root, path))
        except FileNotFoundError:
            raise self._gone(path) from None
        return RemoteFile(path, status.st_size, status.st_mtime)

    def read(self, path, offset):
        try:
            handle = open(_under(self.root, path), "rb")
        except FileNotFoundError:
            raise self._gone(path) from None
        with handle:
            handle.seek(offset)
            for block in iter(lambda: handle.read(CHUNK), b""):
                yield block

    def delete(self, path):
        try:
            os.remove(_under(self.root, path))
        except FileNotFoundError:
            pass


class FolderTarget(Target):
    """A local directory (a mounted network share, a second disk). Files land as <name>.part, fsynced, then get their
    final name by a hard link (which cannot replace a file), or a rename where the file system has no hard links."""

    kind = "folder"
    digests = ("sha256",)  # of its own bytes: a local read
    readable = True
    can_delete = True
    OPTIONS = [Option("path", str,
                      help="The folder that receives the files, keeping their relative paths; ~ and environment "
                           "variables are expanded.")]

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        self.root = expand_path(self.options["path"])

    def probe(self):
        if not os.path.isdir(self.root):
            raise DeviceUnavailable(f"folder {self.root} does not exist")

    def stat(self, path):
        self.probe()
        try:
            status = os.stat(_under(self.root, path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat_mode.S_ISREG(status.st_mode):
            raise PermanentError(f"{_under(self.root, path)} is not a file")
        return status.st_size

    def digest(self, path, algorithm):
        return local_digest(_under(self.root, path), algorithm)

    def read(self, path):
        with open(_under(self.root, path), "rb") as handle:
            yield from iter(lambda: handle.read(CHUNK), b"")

    def held(self, path, note=""):
        self.probe()
        try:
            return os.path.getsize(_under(self.root, self.part_name(path)))
        except FileNotFoundError:
            return 0

    def discard(self, path):
        try:
            os.remove(_under(self.root, self.part_name(path)))
        except FileNotFoundError:
            pass

    def write(self, path, stream, offset, size, progress):
        self.probe()
        part = _under(self.root, self.part_name(path))
        try:
            os.makedirs(os.path.dirname(part), exist_ok=True)
            with open(part, "r+b" if os.path.exists(part) else "wb") as handle:
                handle.truncate(offset)
                handle.seek(offset)
                for block in iter(lambda: stream.read(CHUNK), b""):
                    handle.write(block)
                    offset += len(block)
                    progress(offset)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise _write_error(error, self.root) from None

    def publish(self, path, size, replace=False):
        final = _under(self.root, path)
        part = _under(self.root, self.part_name(path))
        held = os.path.getsize(part)
        if held != size:
            raise TransientError(f"{part} holds {held} bytes, expected {size}")
        try:
            if replace:
                os.replace(part, final)
            else:
                _rename_no_replace(part, final)
            self.folder_syncs.sync(os.path.dirname(final))
        except FileExistsError:
            raise FinalNameTaken(f"{final} exists") from None
        except OSError as error:
            raise _write_error(error, self.root) from None
        return final

    def location(self, path):
        return _under(self.root, path)

    def delete(self, path):
        try:
            os.remove(_under(self.root, path))
        except FileNotFoundError:
            pass


def _write_error(error, root):
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return TransientError(f"target {root} is full")
    return TransientError(f"target {root}: {error.strerror}")


def _rename_no_replace(part, final):
    """Give `part` the name `final` unless that exists (FileExistsError): a hard link cannot replace, then the
    temporary name goes. Where the file system has no hard links (FAT, some shares): check, then rename."""
    try:
        os.link(part, final)
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, "exists", final) from None
        os.rename(part, final)
        return
    os.remove(part)
