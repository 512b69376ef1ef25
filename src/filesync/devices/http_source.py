"""A web server's files as a source: listed from a JSON manifest or from the server's own JSON index of a folder
(nginx `autoindex on; autoindex_format json;`), read with Range requests so an interrupted copy goes on where it
stopped, verified by size and, where the manifest gives one, by SHA-256.

`url` is read at every scan and its JSON decides what it is:
  an object, a manifest:  {"files": [{"path": "missions/survey.plan", "size": 1834, "mtime": 1764560000.0,
                                      "sha256": "<64 hex digits>"}, ...]}
      path    the file's name, '/'-separated, relative to the manifest's own URL (its folder); URL-quoted here
      size    bytes (required)
      mtime   Unix seconds (optional; where missing, the file's Last-Modified is asked with one HEAD per scan)
      sha256  hex (optional; where given, a copy whose SHA-256 differs is not finished: the engine's FileError)
  an array, nginx's index of a folder (`url` ends in '/'): [{"name", "type", "mtime", "size"}, ...], folders
      ("type": "directory") are listed in turn, at most MAX_DEPTH deep (nginx follows links: a loop must end).
      nginx writes names as their bytes, so a name that is not UTF-8 is carried exactly (surrogate-escaped, as
      os.fsdecode makes it); nginx leaves out names that start with a dot.

A listed entry that cannot be served (no size, a SHA-256 that is not one, a name no URL can carry, a manifest file
the server answers 404 for) is listed with RemoteFile.problem, never stopping the listing.

Reads ask `Range: bytes=<offset>-` and check the answer: a 206 must start at the offset; a server that ignores Range
answers 200 with the whole file, and then the first <offset> bytes are read and dropped (the copy goes on, nothing is
copied twice into staging; the log says so once per file). Every answer's total size (and, for an nginx index, its
Last-Modified) must be the listed one, or the copy is not finished (the file changed meanwhile). A body that ends
short is a TransientError. `Accept-Encoding: identity` keeps a server from compressing the bytes.

Errors as the HTTP targets map them (filesync.devices.http): connection refused or TLS refused -> DeviceUnavailable;
401/403 -> AuthRefused; 5xx, 408, 429 and dropped connections -> TransientError; 404 on a file -> Vanished. This
source never deletes (can_delete False: HTTP has no agreed delete).
"""
import email.utils
import json
import logging
import re
from contextlib import closing
from urllib.parse import quote, urljoin

import requests
import urllib3

from filesync.devices.base import Checksum, RemoteFile, Source, filter_options
from filesync.devices.folder import _matcher
from filesync.devices.http import (CONNECTION_OPTIONS, HEADER_OPTIONS, RESPONSE_READ_LIMIT, _Answer, _http_url, _reason,
                                   _Uploader, _without_query, request_headers, transport_error)
from filesync.errors import DeviceUnavailable, FileError, TransientError, UnsafePath, Vanished
from filesync.options import Option

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
MAX_LISTING_BYTES = 32 << 20  # a manifest or index larger than this is refused rather than held in memory
MAX_DEPTH = 32
SHA256 = re.compile(r"^[0-9A-Fa-f]{64}$")
CONTENT_RANGE = re.compile(r"^bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)$")
IDENTITY = {"Accept-Encoding": "identity"}


def _http_time(text):
    """Unix seconds of an HTTP date ('Tue, 01 Dec 2026 04:32:11 GMT'), or -1 where there is none or it is bad."""
    if not isinstance(text, str) or not text:
        return -1.0
    try:
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError):
        return -1.0


def _quoted(path):
    """`path` (a device name: undecodable bytes surrogate-escaped) as a URL path; UnsafePath where it cannot be."""
    try:
        return quote(path.encode("utf-8", "surrogateescape"), safe="/")
    except UnicodeEncodeError:
        raise UnsafePath(f"{path!r} holds characters no URL can carry") from None


class HttpSource(Source):
    """Files offered by a web server through a JSON manifest or an nginx JSON index; see the module text."""

    kind = "http"
    can_delete = False
    checksum_algorithm = "sha256"  # from the manifest, where it gives one
    OPTIONS = [
        Option("url", str, check=_http_url,
               help='The URL of a JSON manifest ({"files": [{"path", "size", "mtime", "sha256"}]}) or of a folder '
                    "served with nginx's JSON index (autoindex_format json)."),
    ] + filter_options() + HEADER_OPTIONS + CONNECTION_OPTIONS

    # The same options as the http target's (headers, headers_env, token...), read the same way: one implementation.
    def _headers(self):
        return request_headers(self.options, self.key)

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        self.http = _Uploader(name, key, self.options)  # the HTTP targets' session, TLS settings and error mapping
        self.url = self.options["url"]
        self._included = _matcher(self.options["include"])
        self._excluded = _matcher(self.options["exclude"])
        self._listed = {}  # path -> (size, mtime or None where the time is not the server's), from the last listing
        self._is_index = None  # whether the url answers with an nginx index (no digests) or a manifest; None: not yet
        self._ignores_range = set()  # files already logged as read from their start
        self._headers()  # a missing variable or file is a config error at start, not at the first request

    # Requests

    def _get(self, url, what, extra=None):
        """A streamed GET (the caller closes the response); transport failures mapped to the engine's errors."""
        headers, secrets = self._headers()
        headers.update(extra or {})
        try:
            response = self.http.session().get(url, headers=headers, timeout=self.http.timeout,
                                                verify=self.http.verify, allow_redirects=False, stream=True)
        except requests.exceptions.RequestException as error:
            raise transport_error(error, f"{self.name}: {what}", self.http.timeout, secrets) from None
        return response, secrets

    def _refusal(self, response, what, secrets):
        """The engine's error for an answer that is not a success (read from at most 64 KiB of its body)."""
        try:
            body = response.raw.read(RESPONSE_READ_LIMIT, decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError):
            body = b""
        return self.http.refusal(_Answer(response.status_code, response.headers, body), what, secrets)

    def _url(self, path):
        return urljoin(self.url, _quoted(path))

    def _fetch_json(self, url):
        """The JSON document at `url` (a manifest or an index). Names in it keep their bytes (surrogate-escaped)."""
        what = f"listing {_without_query(url)}"
        response, secrets = self._get(url, what)
        with closing(response):
            status = response.status_code
            if 300 <= status < 400:
                raise TransientError(f"{self.name}: {what}: HTTP {status}, moved to {response.headers.get('Location')}"
                                     f" (a folder's URL ends in '/'; give the new URL)")
            if status != 200:
                refusal = self._refusal(response, what, secrets)
                # a listing that fails is shown on the source's link state; a 404 there is not one file's fault
                raise refusal if isinstance(refusal, TransientError) else TransientError(str(refusal))
            try:
                body = response.raw.read(MAX_LISTING_BYTES + 1, decode_content=True)
            except (urllib3.exceptions.HTTPError, OSError) as error:
                raise TransientError(f"{self.name}: {what}: connection lost: {_reason(error)}") from None
        if len(body) > MAX_LISTING_BYTES:
            raise TransientError(f"{self.name}: {what}: over {MAX_LISTING_BYTES >> 20} MiB; not read")
        try:
            return json.loads(body.decode("utf-8", "surrogateescape"))
        except ValueError as error:
            raise TransientError(f"{self.name}: {what}: not JSON ({error})") from None

    # Listing

    def _wanted(self, path):
        return self._included(path) and not self._excluded(path)

    def list(self):
        """Every wanted file the manifest or the index names now (see the module text)."""
        document = self._fetch_json(self.url)
        self._is_index = isinstance(document, list)
        if isinstance(document, dict):
            found = self._manifest_files(document)
        elif isinstance(document, list):
            found = self._index_files(document)
        else:
            raise TransientError(f"{self.name}: {_without_query(self.url)} is neither a manifest (a JSON object "
                                 "with \"files\") nor an nginx JSON index (an array)")
        self._listed = {f.path: listed for f, listed in found if listed is not None}
        return [f for f, _ in found]

    def _manifest_entries(self, document):
        """{path: entry} of a manifest's files, and the entries it names twice; TransientError if it is no manifest."""
        entries = document.get("files")
        if not isinstance(entries, list):
            raise TransientError(f"{self.name}: the manifest {_without_query(self.url)} has no \"files\" list")
        by_path, twice = {}, set()
        for index, entry in enumerate(entries):
            path = entry.get("path") if isinstance(entry, dict) else None
            if not isinstance(path, str) or not path:
                log.warning("%s: manifest entry %d has no \"path\"; skipped", self.name, index)
                continue
            if path in by_path:
                twice.add(path)
            by_path[path] = entry
        return by_path, twice

    def _manifest_files(self, document):
        by_path, twice = self._manifest_entries(document)
        found = []
        for path, entry in by_path.items():
            if not self._wanted(path):
                continue
            size, mtime, sha256 = entry.get("size"), entry.get("mtime"), entry.get("sha256")
            problem = ""
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                problem = f"the manifest gives {path!r} no size (\"size\": bytes)"
            elif sha256 is not None and not (isinstance(sha256, str) and SHA256.match(sha256)):
                problem = f"the manifest's sha256 of {path!r} is not 64 hex digits"
            elif mtime is not None and (not isinstance(mtime, (int, float)) or isinstance(mtime, bool)):
                problem = f"the manifest's mtime of {path!r} is not a number of seconds"
            elif path in twice:
                problem = f"the manifest names {path!r} more than once"
            else:
                try:
                    _quoted(path)
                except UnsafePath as error:
                    problem = str(error)
            if problem:
                found.append((RemoteFile(path, size if isinstance(size, int) else 0, -1.0, problem=problem), None))
                continue
            if mtime is None:  # the server's time, so that a new version of the file is told from the old one
                try:
                    mtime = self._head(path).mtime
                except Vanished:
                    found.append((RemoteFile(path, size, -1.0, problem=f"the manifest lists {path!r}, but the "
                                             "server answers 404 for it"), None))
                    continue
                found.append((RemoteFile(path, size, mtime), (size, mtime)))
            else:
                found.append((RemoteFile(path, size, float(mtime)), (size, None)))
        return found

    def _index_files(self, document):
        found = []
        pending = [("", self.url, document, 0)]
        while pending:
            prefix, url, items, depth = pending.pop()
            if items is None:
                try:
                    items = self._fetch_json(url)
                except DeviceUnavailable:
                    raise
                except TransientError as error:  # one folder that cannot be listed (gone meanwhile): the rest goes on
                    log.warning("%s: skipped folder %s: %s", self.name, prefix, error)
                    continue
                if not isinstance(items, list):
                    log.warning("%s: skipped folder %s: its index is not a JSON array", self.name, prefix)
                    continue
            for item in items:
                name = item.get("name") if isinstance(item, dict) else None
                if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
                    log.warning("%s: skipped an index entry without a usable name in %s: %r", self.name,
                                prefix or "/", item)
                    continue
                relative = prefix + name
                if item.get("type") == "directory":
                    if depth + 1 >= MAX_DEPTH:
                        log.warning("%s: not listing %s: deeper than %d folders", self.name, relative, MAX_DEPTH)
                    else:
                        try:
                            pending.append((relative + "/", urljoin(url, _quoted(name) + "/"), None, depth + 1))
                        except UnsafePath as error:
                            log.warning("%s: skipped folder %r: %s", self.name, relative, error)
                    continue
                if item.get("type") != "file" or not self._wanted(relative):
                    continue
                size, mtime = item.get("size"), _http_time(item.get("mtime"))
                problem = ""
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    problem = f"the server's index gives {relative!r} no size"
                else:
                    try:
                        _quoted(relative)
                    except UnsafePath as error:
                        problem = str(error)
                if problem:
                    found.append((RemoteFile(relative, size if isinstance(size, int) else 0, mtime, problem=problem),
                                  None))
                else:
                    found.append((RemoteFile(relative, size, mtime), (size, mtime)))
        return found

    # Files

    def probe(self):
        """HEAD on the server's root: any answer means it is up; DeviceUnavailable when it cannot be reached."""
        self.http.probe(self.url)

    def stat(self, path):
        """What the manifest says of `path` now (its time is the manifest's, not the server's), or for an index the
        size (Content-Length) and time (Last-Modified) from a HEAD request; Vanished when it is no longer offered."""
        if self._is_index is None:
            self.list()
        if not self._is_index:
            entry = next((f for f in self.list() if f.path == path and not f.problem), None)
            if entry is None:
                raise Vanished(f"{path} is no longer in the manifest {_without_query(self.url)}")
            return entry
        return self._head(path)

    def _head(self, path):
        """Size (Content-Length) and time (Last-Modified) from a HEAD request; Vanished on 404."""
        headers, secrets = self._headers()
        headers.update(IDENTITY)
        answer = self.http.send("HEAD", self._url(path), headers=headers, secrets=secrets)
        if answer.status == 404:
            raise Vanished(f"{path} is no longer on {_without_query(self.url)} (HTTP 404)")
        if answer.status != 200:
            raise self.http.refusal(answer, f"HEAD {path}", secrets)
        try:
            size = int(answer.headers["Content-Length"])
        except (KeyError, ValueError):
            raise TransientError(f"{self.name}: HEAD {path}: the server gives no Content-Length") from None
        return RemoteFile(path, size, _http_time(answer.headers.get("Last-Modified")))

    def _check_version(self, path, total, last_modified):
        """TransientError when the server now serves another version than the one listed (size, or its time)."""
        listed = self._listed.get(path)
        if listed is None:
            return
        size, mtime = listed
        if total is not None and total != size:
            raise TransientError(f"{path} changed since it was listed ({size} -> {total} bytes): not finished yet")
        if mtime is not None and mtime >= 0 and last_modified >= 0 and last_modified != mtime:
            raise TransientError(f"{path} changed since it was listed (Last-Modified differs): not finished yet")

    def read(self, path, offset):
        """Yield the file's bytes from `offset` (a Range request; see the module text for servers that ignore it)."""
        url = self._url(path)
        what = f"GET {path}"
        extra = dict(IDENTITY)
        if offset:
            extra["Range"] = f"bytes={offset}-"
        response, secrets = self._get(url, what, extra)
        with closing(response):
            status = response.status_code
            content_range = CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
            if status == 404:
                raise Vanished(f"{path} is no longer on {_without_query(self.url)} (HTTP 404)")
            if status == 416 and offset:
                total = content_range.group(3) if content_range else "*"
                if total.isdigit() and int(total) == offset:
                    return  # everything was copied already
                raise TransientError(f"{path} is {total} bytes now, less than the {offset} already copied: it changed")
            if status not in (200, 206):
                raise self._refusal(response, what, secrets)
            skip = 0
            if status == 206:
                if not content_range or content_range.group(1) is None or int(content_range.group(1)) != offset:
                    raise TransientError(f"{self.name}: {what}: asked from byte {offset}, the server answered "
                                         f"{response.headers.get('Content-Range')!r}")
                total = int(content_range.group(3)) if content_range.group(3).isdigit() else None
            else:
                length = response.headers.get("Content-Length", "")
                total = int(length) if length.isdigit() else None
                skip = offset
                if offset and path not in self._ignores_range:
                    self._ignores_range.add(path)
                    log.info("%s: the server ignores Range for %s: reading it from its start and dropping the "
                             "%d bytes copied already", self.name, path, offset)
            if total is not None and total < offset:
                raise TransientError(f"{path} is {total} bytes now, less than the {offset} already copied: it changed")
            self._check_version(path, total, _http_time(response.headers.get("Last-Modified")))
            position = offset - skip
            chunks = response.iter_content(CHUNK)
            while True:
                try:
                    block = next(chunks)
                except StopIteration:
                    break
                except requests.exceptions.RequestException as error:
                    raise transport_error(error, f"{self.name}: {what}", self.http.timeout, secrets) from None
                if skip:
                    dropped = min(skip, len(block))
                    skip -= dropped
                    position += dropped
                    block = block[dropped:]
                    if not block:
                        continue
                position += len(block)
                yield block
            if total is not None and position != total:
                raise TransientError(f"{self.name}: {what}: the server sent {position} of {total} bytes")

    def checksum(self, path):
        """The manifest's SHA-256 of `path` (fetched now), None where it gives none or the url is an nginx index.

        Vanished when the manifest no longer names the file."""
        if self._is_index:
            return None
        document = self._fetch_json(self.url)
        if not isinstance(document, dict):
            self._is_index = isinstance(document, list)
            return None
        by_path, twice = self._manifest_entries(document)
        entry = by_path.get(path)
        if entry is None:
            raise Vanished(f"the manifest no longer lists {path}")
        sha256 = entry.get("sha256")
        if sha256 is None:
            return None
        if path in twice or not isinstance(sha256, str) or not SHA256.match(sha256):
            raise FileError(f"the manifest's sha256 of {path} is not usable")
        return Checksum("sha256", sha256.lower())

    def close(self):
        """Drop this thread's connections; the next request opens new ones."""
        self.http.close()
