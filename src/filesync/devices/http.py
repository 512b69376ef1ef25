"""Targets that upload over HTTP: Flight Review (PX4/flight_review, the server behind logs.px4.io) and any HTTP endpoint.

An HTTP upload cannot be resumed: write() sends the whole file in one streamed request and remembers where the server put
it; publish() hands that location to the engine. A post whose answer is lost is sent again, so uploads here are
at-least-once (Flight Review does not deduplicate: such a file can appear twice).

Every request goes through _Uploader, which streams the body from disk (memory stays flat whatever the size) and turns
what went wrong into the engine's error kinds:
  connection refused, host or network unreachable, name not resolved, connect timeout,
  TLS certificate not accepted                       -> DeviceUnavailable (wait and probe; nothing is counted)
  401 and 403 (the credentials are wrong for every file) -> AuthRefused (wait and probe; no file is parked)
  400 and other refusals (404, 405, 413...)            -> PermanentError with the server's message (parked)
  5xx, 408, 429, read timeouts, dropped connections,
  an answer that cannot be read or understood         -> TransientError (retried with backoff)
"""
import json
import logging
import os
import re
import socket
import threading
import warnings
from datetime import datetime, timezone
from html import unescape
from urllib.parse import quote, urljoin, urlsplit

import requests
import urllib3
from requests_toolbelt import MultipartEncoder

from filesync.devices.base import Target
from filesync.errors import (AuthRefused, ConfigError, DeviceUnavailable, FileError, PermanentError, SkipFile,
                             TransientError)
from filesync.options import Option, expand_path, positive, resolve_secret, secret_options, template_check

log = logging.getLogger(__name__)

ULOG_MAGIC = b"ULog\x01\x12\x35"
# Flight Review's default body limit is 300 MiB; above it the URL must carry ?expected_size. Asking for it from 100 MB
# on leaves a wide margin, as the issue asks.
EXPECTED_SIZE_FROM = 100 * 1000 * 1000
RESPONSE_READ_LIMIT = 64 * 1024  # the most of an answer read: enough for any JSON reply or error page
PROGRESS_STEP = 256 * 1024  # report progress at most every this many bytes
MESSAGE_LIMIT = 300  # characters of a server's message kept in an error text

RETRY_STATUS = {408, 425, 429}  # 4xx answers that mean "later", not "never"
AUTH_STATUS = {401, 403}  # the credentials: wrong for every file alike

# Flight Review's form values (plot_app/templates/upload.html).
FLIGHT_REVIEW_TYPES = ("personal", "flightreport")
FLIGHT_REVIEW_RATINGS = ("notset", "crash_pilot", "crash_sw_hw", "unsatisfactory", "good", "great")

DESCRIPTION_PLACEHOLDERS = ("name", "path", "vehicle", "date", "time")
URL_PLACEHOLDERS = ("path", "name", "vehicle")
PX4_LOG_PATH = re.compile(r"(?:^|/)(\d{4}-\d{2}-\d{2})/(\d{2})_(\d{2})_(\d{2})\.ulg$")


def _http_url(value):
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"expected an http:// or https:// URL, got {value!r}"
    return None


def _url_template_check(value):
    return template_check(URL_PLACEHOLDERS)(value) or _http_url(
        value.format(**{name: "x" for name in URL_PLACEHOLDERS}))


def _success_status_check(value):
    for status in value:
        if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 299:
            return f"expected a list of 2xx status codes, got {status!r}"
    return None if value else "needs at least one status code"


def _string_mapping_check(value):
    for name, text in value.items():
        if not isinstance(name, str) or not isinstance(text, str):
            return f"expected a mapping of strings, got {name!r}: {text!r}"
    return None


# How the http target and source authenticate: fixed headers, headers from the environment, a token (read per request).
HEADER_OPTIONS = [
    Option("headers", dict, {}, check=_string_mapping_check,
           help="Fixed header values sent with every request, name to text (no secrets here: use headers_env)."),
    Option("headers_env", dict, {}, check=_string_mapping_check,
           help="Headers whose values come from the environment: header name to environment variable name; never "
                "logged."),
    Option("auth_scheme", str, "Bearer",
           help="Scheme of the Authorization header sent with the token: Authorization: <auth_scheme> <token>."),
] + secret_options("token", "the token sent as Authorization: <auth_scheme> <token>")
CONNECTION_OPTIONS = [
    Option("timeout", float, 120.0, positive,
           help="Seconds to wait for the server's answer (it may parse the whole file first)."),
    Option("connect_timeout", float, 10.0, positive,
           help="Seconds to wait for the TCP (and TLS) connection to be made."),
    Option("verify_tls", bool, True,
           help="false turns off the check of the server's TLS certificate (a loud warning; anyone on the path can "
                "read and change the traffic)."),
    Option("ca_bundle", str, "",
           help="A PEM file of the certificate authorities to trust instead of the system's, e.g. for a server with "
                "its own CA."),
]


class _CountingReader:
    """The staged file as a body: reads exactly `size` bytes from `stream` and reports progress.

    requests and MultipartEncoder take its `len`/__len__ for Content-Length and read it in blocks, so the file is never
    held in memory. A file that ends early is an error rather than a short body the server would wait for.
    """

    def __init__(self, stream, size, progress):
        self.stream = stream
        self.size = size
        self.sent = 0
        self.progress = progress
        self._reported = 0

    @property
    def len(self):
        """Bytes still to send (MultipartEncoder reads this to know when the part is done)."""
        return self.size - self.sent

    def __len__(self):
        return self.len

    def read(self, amount=-1):
        """Return the next block of the file; at most `amount` bytes."""
        remaining = self.size - self.sent
        if remaining <= 0:
            return b""
        amount = remaining if amount is None or amount < 0 else min(amount, remaining)
        block = self.stream.read(amount)
        if not block:
            raise FileError(f"the staged file ended after {self.sent} of {self.size} bytes")
        self.sent += len(block)
        if self.sent - self._reported >= PROGRESS_STEP or self.sent == self.size:
            self._reported = self.sent
            self.progress(self.sent)
        return block

    def __iter__(self):  # requests streams a body only when it is iterable
        return iter(lambda: self.read(PROGRESS_STEP), b"")


class _Answer:
    """What the server said: status, headers, and at most RESPONSE_READ_LIMIT bytes of the body."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def message(self):
        """The server's message as one short line: the text of an HTML error page, or the body as text."""
        text = self.body.decode("utf-8", "replace")
        body = re.search(r"<body[^>]*>(.*?)(?:</body>|$)", text, re.S | re.I)
        if body:
            text = body.group(1)
        text = " ".join(unescape(re.sub(r"<[^>]+>", " ", text)).split())
        return text[:MESSAGE_LIMIT] or "(no message)"


class _Uploader:
    """Sends streamed requests for one target and maps every failure onto filesync's error kinds (see module doc)."""

    def __init__(self, target_name, key, options):
        self.target_name = target_name
        self.timeout = (options["connect_timeout"], options["timeout"])
        if options["ca_bundle"]:
            bundle = expand_path(options["ca_bundle"])
            if not os.path.isfile(bundle):
                raise ConfigError(f"{key}.ca_bundle: no such file {bundle}")
            self.verify = bundle
        else:
            self.verify = options["verify_tls"]
        if not options["verify_tls"]:
            if options["ca_bundle"]:
                raise ConfigError(f"{key}.verify_tls: false contradicts ca_bundle; give one of them")
            log.warning("%s: verify_tls is false: the server's TLS certificate is NOT checked; anyone on the path "
                        "can read and change the uploads", key)
            # said once here; urllib3 would repeat it for every request (it is raised only for unverified ones)
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        self._sessions = threading.local()  # a requests.Session is not shared between threads

    def session(self):
        """This thread's requests.Session (made on first use)."""
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # no proxy or .netrc credentials picked up from the environment
            self._sessions.session = session
        return session

    def send(self, method, url, body=None, headers=None, secrets=()):
        """Send one request and return its _Answer (any status); raise the engine's error kinds on transport failures.

        `secrets` are strings that must never appear in an error text (a server may echo a header back).
        """
        what = f"{self.target_name}: {method} {_without_query(url)}"
        try:
            response = self.session().request(method, url, data=body, headers=headers, timeout=self.timeout,
                                              verify=self.verify, allow_redirects=False, stream=True)
        except requests.exceptions.RequestException as error:
            raise transport_error(error, what, self.timeout, secrets) from None
        try:
            body = response.raw.read(RESPONSE_READ_LIMIT, decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise TransientError(_redact(f"{what}: the answer could not be read: {_reason(error)}", secrets)) from None
        finally:
            response.close()
        return _Answer(response.status_code, response.headers, body)

    def refusal(self, answer, what, secrets=()):
        """The error for a status that is not success: TransientError for 5xx and 'later' codes, else PermanentError."""
        text = _redact(f"{self.target_name}: {what}: HTTP {answer.status}: {answer.message()}", secrets)
        if answer.status >= 500 or answer.status in RETRY_STATUS:
            return TransientError(text)
        if answer.status in AUTH_STATUS:
            return AuthRefused(f"{text} (check the credentials; uploads wait until they are accepted)")
        return PermanentError(text)

    def close(self):
        """Close this thread's session (its pooled connections)."""
        session = getattr(self._sessions, "session", None)
        if session is not None:
            session.close()
            self._sessions.session = None

    def probe(self, url):
        """A HEAD request to the server's root: any HTTP answer means the host is up; raise DeviceUnavailable if not."""
        parts = urlsplit(url)
        root = f"{parts.scheme}://{parts.netloc}/"
        try:
            self.send("HEAD", root)
        except DeviceUnavailable:
            raise
        except TransientError as error:
            raise DeviceUnavailable(str(error)) from None


def transport_error(error, what, timeout, secrets=()):
    """The engine's error for a request that got no answer (see the module text); `timeout` is (connect, read)."""
    if isinstance(error, requests.exceptions.SSLError):
        return DeviceUnavailable(_redact(f"{what}: TLS failed: {_reason(error)}", secrets))
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return DeviceUnavailable(f"{what}: no answer to the connection within {timeout[0]:g} s")
    if isinstance(error, requests.exceptions.ConnectionError):
        if _is_unreachable(error):
            return DeviceUnavailable(_redact(f"{what}: cannot connect: {_reason(error)}", secrets))
        return TransientError(_redact(f"{what}: connection lost: {_reason(error)}", secrets))
    if isinstance(error, requests.exceptions.Timeout):
        return TransientError(f"{what}: no answer within {timeout[1]:g} s")
    return TransientError(_redact(f"{what}: {_reason(error)}", secrets))


def request_headers(options, key):
    """The request headers a device's options give (headers, headers_env, a token as auth_scheme), and the secret
    values among them, read now; ConfigError naming the key where a variable or file is missing."""
    headers = dict(options["headers"])
    secrets = []
    for header, variable in options["headers_env"].items():
        if variable not in os.environ:
            raise ConfigError(f"{key}.headers_env.{header}: environment variable {variable} is not set")
        headers[header] = os.environ[variable]
        secrets.append(os.environ[variable])
    token = resolve_secret(options, key, "token")
    if token:
        headers["Authorization"] = f"{options['auth_scheme']} {token}".strip()
        secrets.append(token)
    return headers, secrets


def _without_query(url):
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _redact(text, secrets):
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _reason(error):
    """The innermost cause of a requests/urllib3 error, as a short text."""
    cause = error
    for _ in range(10):  # requests wraps urllib3 wraps the socket error; follow the chain a few links at most
        inner = getattr(cause, "reason", None)
        if isinstance(inner, BaseException) and inner is not cause:
            cause = inner
            continue
        if cause.args and isinstance(cause.args[-1], BaseException) and cause.args[-1] is not cause:
            cause = cause.args[-1]
            continue
        break
    if isinstance(cause, urllib3.exceptions.NewConnectionError):
        # "<urllib3.connection.HTTPConnection object at 0x..>: Failed to establish a new connection: [Errno 111] ..."
        return str(cause).split(": ", 1)[-1]
    return str(cause) or type(cause).__name__


def _is_unreachable(error):
    """True when the connection was never made (refused, no route, name unknown), as opposed to lost on the way."""
    cause = error.args[0] if error.args else None
    reason = getattr(cause, "reason", None)
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def _hostname():
    return socket.gethostname()


class _HttpTargetBase(Target):
    """What both HTTP targets share: no resume, one location remembered per uploaded path, probe, close."""

    resumable = False
    verifiable = False  # the server names and keeps what it receives; nothing can be compared before or after

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        self.uploader = _Uploader(name, key, self.options)
        self._locations = {}
        self._locations_lock = threading.Lock()

    def held(self, path, note=""):
        """Nothing: an HTTP upload that stopped leaves nothing to resume."""
        return 0

    def _remember(self, path, location):
        with self._locations_lock:
            self._locations[path] = location

    def publish(self, path, size, replace=False):
        """Return where write() put the file. The server published it already when it answered."""
        with self._locations_lock:
            location = self._locations.pop(path, None)
        if location is None:  # the process restarted between write and publish: send the file again
            raise TransientError(f"{self.name}: the answer to the upload of {path} was lost; it will be sent again")
        return location

    def close(self):
        """Drop this thread's connections; the next request opens new ones."""
        self.uploader.close()


def _check_offset(offset):
    if offset:
        raise ValueError(f"HTTP uploads cannot resume, yet write() was asked to start at byte {offset}")


class FlightReviewTarget(_HttpTargetBase):
    """Uploads ULog files to a Flight Review server (logs.px4.io or one's own) and returns the log's plot URL.

    Config keys map to the server's form fields: email, description (a template, see below), type, source,
    allow_for_analysis (allowForAnalysis), public, vehicle_name (vehicleName), wind_speed (windSpeed), rating,
    video_url (videoUrl), feedback. description and email are always sent (the server fails without email); the
    others only when set. Booleans go as the strings "true"/"false" the server compares with.

    description placeholders: {name} the file name (13_45_10.ulg), {path} its path in the source
    (2024-05-01/13_45_10.ulg), {vehicle} vehicle_name or, if unset, this computer's host name, {date} and {time} the
    log's start as PX4 names it (YYYY-MM-DD/HH_MM_SS.ulg, UTC) or else the staged file's modification time in UTC,
    as YYYY-MM-DD and HH:MM:SS.
    """

    kind = "flight_review"
    OPTIONS = [
        Option("server", str, check=_http_url,
               help="The Flight Review server's URL, e.g. https://logs.px4.io or your own."),
        Option("email", str, "",
               help="Email address sent with each log (the form field is always sent: the server fails without it); "
                    "may be empty."),
        Option("description", str, "{name} from {vehicle}", check=template_check(DESCRIPTION_PLACEHOLDERS),
               help="Description of each log, a template with {name}, {path}, {vehicle}, {date} and {time}."),
        Option("type", str, "personal", choices=FLIGHT_REVIEW_TYPES,
               help="Flight Review's upload type: personal (not listed publicly) or flightreport."),
        Option("source", str, "filesync",
               help="The form's source field: who uploaded the log."),
        Option("allow_for_analysis", bool, None,
               help="Sent as allowForAnalysis when set: whether the log may be used for analysis."),
        Option("public", bool, None,
               help="Sent as public when set: whether the log is listed on the server's public page."),
        Option("vehicle_name", str, "",
               help="Sent as vehicleName, and {vehicle} in description; empty: this computer's host name in the "
                    "description, nothing sent."),
        Option("wind_speed", int, None,
               help="Sent as windSpeed when set: the form's wind speed class (an integer)."),
        Option("rating", str, None, choices=FLIGHT_REVIEW_RATINGS,
               help="Sent when set: the flight's rating, one of the server's values."),
        Option("video_url", str, None,
               help="Sent as videoUrl when set: a video of the flight."),
        Option("feedback", str, None,
               help="Sent when set: free text about the flight."),
        Option("redirect", bool, False,
               help="false: the server answers JSON with the log's URL (what filesync records); true: it answers a "
                    "302 redirect."),
    ] + CONNECTION_OPTIONS

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        self.server = self.options["server"].rstrip("/") + "/"

    def probe(self):
        """HEAD on the server's root; DeviceUnavailable when it cannot be reached."""
        self.uploader.probe(self.server)

    def description(self, path, stream):
        """The description text for the log at `path` (see the class doc for the placeholders)."""
        match = PX4_LOG_PATH.search(path)
        if match:
            date, clock = match.group(1), ":".join(match.group(2, 3, 4))
        else:
            try:
                moment = datetime.fromtimestamp(os.fstat(stream.fileno()).st_mtime, timezone.utc)
            except (AttributeError, OSError, ValueError):
                moment = datetime.now(timezone.utc)
            date, clock = moment.strftime("%Y-%m-%d"), moment.strftime("%H:%M:%S")
        return self.options["description"].format(
            name=path.rsplit("/", 1)[-1], path=path, vehicle=self.options["vehicle_name"] or _hostname(),
            date=date, time=clock)

    def fields(self, path, stream):
        """The form's text fields, in the order PX4's upload_log.py sends them."""
        options = self.options
        fields = [("type", options["type"]), ("description", self.description(path, stream)),
                  ("email", options["email"]), ("source", options["source"])]
        optional = [("feedback", "feedback"), ("allowForAnalysis", "allow_for_analysis"), ("public", "public"),
                    ("vehicleName", "vehicle_name"), ("windSpeed", "wind_speed"), ("rating", "rating"),
                    ("videoUrl", "video_url")]
        for field, option in optional:
            value = options[option]
            if value is None or value == "":
                continue
            fields.append((field, _form_value(value)))
        fields.append(("redirect", _form_value(options["redirect"])))
        return fields

    def write(self, path, stream, offset, size, progress):
        """POST the whole file to <server>/upload as `filearg`; remember the log's URL for publish()."""
        _check_offset(offset)
        head = stream.read(len(ULOG_MAGIC))
        stream.seek(offset)
        if head != ULOG_MAGIC:
            raise SkipFile(f"{path}: not a ULog file (it does not start with the ULog magic bytes); "
                           f"Flight Review takes only ULog files")
        name = path.rsplit("/", 1)[-1]
        encoder = MultipartEncoder(self.fields(path, stream) + [
            ("filearg", (name, _CountingReader(stream, size, progress), "application/octet-stream"))])
        url = urljoin(self.server, "upload")
        if size > EXPECTED_SIZE_FROM:
            # The server hands expected_size to tornado's set_max_body_size, which limits the whole request body,
            # not the file alone: announce the body's length.
            url += f"?expected_size={encoder.len}"
        answer = self.uploader.send("POST", url, encoder, {"Content-Type": encoder.content_type})
        self._remember(path, self._log_url(answer, path))

    def _log_url(self, answer, path):
        what = f"upload of {path}"
        if answer.status in (301, 302, 303, 307, 308) and answer.headers.get("Location"):
            return urljoin(self.server, answer.headers["Location"])
        if answer.status == 200:
            try:
                return urljoin(self.server, json.loads(answer.body)["url"])
            except (ValueError, KeyError, TypeError):
                raise TransientError(f"{self.name}: {what}: the server answered 200 without a log URL: "
                                     f"{answer.message()}") from None
        if answer.status < 400:
            raise TransientError(f"{self.name}: {what}: unexpected answer HTTP {answer.status}: {answer.message()}")
        raise self.uploader.refusal(answer, what)


def _form_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class HttpTarget(_HttpTargetBase):
    """Uploads each file with PUT or POST to a URL made from a template, and returns that URL (or the Location).

    url placeholders: {path} the file's path in the source, {name} its file name, {vehicle} the `vehicle` option
    (default: this computer's host name); each is URL-quoted. body: raw (the file is the request body) or multipart
    (the file is the part `file_field`, beside the text `fields`). headers: fixed header values; headers_env: header
    name -> environment variable holding its value; token / token_env / token_file: sent as
    "Authorization: <auth_scheme> <token>". Secrets are read at each upload and kept out of logs and error texts.
    """

    kind = "http"
    OPTIONS = [
        Option("url", str, check=_url_template_check,
               help="URL each file is sent to, a template with {path}, {name} and {vehicle} (each URL-quoted)."),
        Option("method", str, "PUT", choices=("PUT", "POST"),
               help="HTTP method of the upload: PUT or POST."),
        Option("body", str, "raw", choices=("raw", "multipart"),
               help="raw: the file is the request body; multipart: the file is the form part file_field, beside "
                    "fields."),
        Option("file_field", str, "file",
               help="Name of the form part that carries the file (body: multipart)."),
        Option("fields", dict, {}, check=_string_mapping_check,
               help="More form fields sent with a multipart upload, name to text."),
        Option("vehicle", str, "",
               help="{vehicle} in url; empty: this computer's host name."),
        Option("success_status", list, [200, 201, 204], check=_success_status_check,
               help="HTTP status codes that mean the server took the file."),
    ] + HEADER_OPTIONS + CONNECTION_OPTIONS

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        self._headers()  # a missing variable or file is a config error at start, not at the first upload

    def _headers(self):
        return request_headers(self.options, self.key)

    def url_for(self, path):
        """The upload URL of `path`, from the url template."""
        return self.options["url"].format(
            path=quote(path, safe="/"), name=quote(path.rsplit("/", 1)[-1], safe=""),
            vehicle=quote(self.options["vehicle"] or _hostname(), safe=""))

    def probe(self):
        """HEAD on the server's root; DeviceUnavailable when it cannot be reached."""
        self.uploader.probe(self.options["url"])

    def write(self, path, stream, offset, size, progress):
        """Send the whole file; remember the location for publish()."""
        _check_offset(offset)
        headers, secrets = self._headers()
        url = self.url_for(path)
        reader = _CountingReader(stream, size, progress)
        if self.options["body"] == "multipart":
            body = MultipartEncoder(list(self.options["fields"].items()) + [
                (self.options["file_field"], (path.rsplit("/", 1)[-1], reader, "application/octet-stream"))])
            headers["Content-Type"] = body.content_type
        else:
            body = reader if size else b""  # requests would send an empty stream chunked
            headers.setdefault("Content-Type", "application/octet-stream")
        answer = self.uploader.send(self.options["method"], url, body, headers, secrets)
        if answer.status in self.options["success_status"]:
            location = answer.headers.get("Location")
            self._remember(path, urljoin(url, location) if location else url)
            return
        if 200 <= answer.status < 300:  # the server took it, but not as configured: a person must look
            raise PermanentError(_redact(f"{self.name}: upload of {path}: HTTP {answer.status} is not in "
                                         f"success_status: {answer.message()}", secrets))
        if answer.status < 400:
            raise TransientError(_redact(f"{self.name}: upload of {path}: unexpected answer HTTP {answer.status}: "
                                         f"{answer.message()}", secrets))
        raise self.uploader.refusal(answer, f"upload of {path}", secrets)
