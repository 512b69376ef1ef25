"""File names: the safe form filesync keeps and sends, the checks that keep it inside a root, temporary and conflict names.

A device lists names as it gets them (a str where undecodable bytes are surrogate-escaped, as os.fsdecode makes
them). The ledger, the targets, the topics and the status use the *safe name*: valid UTF-8 without control characters
or backslashes, made by this reversible escape (documented in docs/guarantees.md, "Names"):

    a byte that is not part of valid UTF-8, a control character (0x00-0x1F, 0x7F) and a backslash -> %XX (hex)
    a '%' followed by two hex digits (which would read as an escape)                                -> %25

Everything else is kept, so ordinary names (with spaces, '#', '%', a leading '-', any language) stay as they are, and
device_name() gives the device back its exact name.
"""
import hashlib
import os
import re
import time

from filesync.errors import UnsafePath

PART_SUFFIX = ".part"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # one search: every copy checks its name a few times
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024

_NEEDS_ESCAPE = re.compile(r"[\x00-\x1f\x7f\\\udc80-\udcff]|%(?=[0-9A-Fa-f]{2})|[\ud800-\udfff]")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def _escape(match):
    character = match.group(0)
    raw = os.fsencode(character) if "\udc80" <= character <= "\udcff" else character.encode("utf-8", "surrogatepass")
    return "".join(f"%{byte:02X}" for byte in raw)


def safe_name(device_path: str) -> str:
    """The safe form of a name as a device listed it (see the module doc); unchanged for ordinary names."""
    return _NEEDS_ESCAPE.sub(_escape, device_path)


def device_name(path: str) -> str:
    """The device's own name for a safe name: the inverse of safe_name (undecodable bytes surrogate-escaped)."""
    if "%" not in path:
        return path
    raw = _ESCAPE.sub(lambda m: "\x00" + m.group(1), path)  # mark escapes, then rebuild the bytes around them
    pieces = raw.split("\x00")
    data = bytearray(pieces[0].encode("utf-8", "surrogateescape"))
    for piece in pieces[1:]:
        data.append(int(piece[:2], 16))
        data += piece[2:].encode("utf-8", "surrogateescape")
    return os.fsdecode(bytes(data))


def check_relative(path: str) -> str:
    """Return `path` if it is a safe relative '/'-separated name; raise UnsafePath naming the problem otherwise.

    Refused: empty, absolute, '..' or '.' components, control characters or backslashes (safe_name escapes them, so
    only a bug lets one through), components over 255 bytes or a whole path over 1024 bytes, and names ending in the
    temporary suffix.
    """
    if not path:
        raise UnsafePath("empty file name")
    if _CONTROL.search(path):
        raise UnsafePath(f"file name {path!r} holds a control character")
    if path.startswith("/") or "\\" in path or re.match(r"[A-Za-z]:(/|$)", path):
        # a first folder named like a drive ("C:") would be absolute on a Windows server; "a:b.txt" is an ordinary name
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


def _fit(stem: str, room: int) -> str:
    """`stem` cut to at most `room` UTF-8 bytes, on a character boundary."""
    return stem.encode("utf-8")[:room].decode("utf-8", "ignore")


def part_name(path: str, version_id: int = 0) -> str:
    """The temporary name an upload of version `version_id` of `path` lands under: <name>.v<id>.part (<name>.part
    without a version), so that an interrupted upload is only ever resumed by the version it belongs to; for a name
    too long to take the suffix, a shortened name with a hash of the whole, within 255 bytes and unique."""
    directory, _, name = path.rpartition("/")
    suffix = (f".v{version_id}" if version_id else "") + PART_SUFFIX
    if len((name + suffix).encode("utf-8")) > MAX_NAME_BYTES:
        tag = "~" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
        name = _fit(name, MAX_NAME_BYTES - len(suffix) - len(tag)) + tag
    return f"{directory}/{name}{suffix}" if directory else name + suffix


def conflict_name(path: str, mtime: float, version_id: int, attempt: int = 0) -> str:
    """The name a version is published under when `path` on a target holds another file (on_conflict: keep_both):
    the version's time (UTC) before the extension, `log001.2026-11-20T10-00-00Z.ulg`; `-v<id>` where the time is not
    known; `-<n>` for the n-th further try. Always within 255 bytes."""
    directory, _, name = path.rpartition("/")
    dot = name.rfind(".")
    stem, extension = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    if mtime >= 0:
        tag = "." + time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime(mtime))
    else:
        tag = f".v{version_id}"
    if attempt:
        tag += f"-{attempt}"
    stem = _fit(stem, MAX_NAME_BYTES - len((tag + extension).encode("utf-8")))
    name = stem + tag + extension
    return f"{directory}/{name}" if directory else name


def staged_path(staging_dir: str, source: str, version_id: int) -> str:
    """Where version `version_id` of a file of `source` is kept in staging: <staging_dir>/<source>/<id>.

    Staging is keyed by the ledger's version id, never by name: two versions of one name never share a staged file,
    and a name too long or too odd for the staging file system still stages. <id>.json beside it says what it is.
    """
    return os.path.join(staging_dir, source, str(version_id))
