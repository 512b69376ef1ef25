"""Checking the relative paths that sources report, before they name anything in staging or on a target."""
import os

from filesync.errors import UnsafePath

PART_SUFFIX = ".part"
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024


def check_relative(path: str) -> str:
    """Return `path` if it is a safe relative '/'-separated path; raise UnsafePath naming the problem otherwise.

    Refused: empty, absolute, '..' or '.' components, NUL or other control characters, backslashes, components over
    255 bytes or a whole path over 1024 bytes, and names ending in the temporary suffix.
    """
    if not path:
        raise UnsafePath("empty file name")
    if "\x00" in path or any(ord(c) < 32 for c in path):
        raise UnsafePath(f"file name {path!r} holds a control character")
    if path.startswith("/") or "\\" in path or (len(path) > 1 and path[1] == ":"):
        raise UnsafePath(f"file name {path!r} is absolute or uses backslashes")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafePath(f"file name {path!r} has an empty, '.' or '..' component")
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise UnsafePath(f"file name {path[:60]!r}... is over {MAX_PATH_BYTES} bytes")
    if any(len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for part in parts):
        raise UnsafePath(f"file name {path[:60]!r}... has a component over {MAX_NAME_BYTES} bytes")
    if path.endswith(PART_SUFFIX):
        raise UnsafePath(f"file name {path!r} ends in {PART_SUFFIX}, the suffix of unfinished transfers")
    return path


def staged_path(staging_dir: str, source: str, path: str) -> str:
    """Where a file of `source` is kept in staging: <staging_dir>/<source>/<path>."""
    return os.path.join(staging_dir, source, *path.split("/")) if path else os.path.join(staging_dir, source)
