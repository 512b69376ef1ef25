"""An S3 bucket as a target (AWS S3 or a compatible store: SeaweedFS, MinIO, Ceph RGW...), through boto3.

How the engine's contract maps onto S3, which has no rename:
  Files from multipart_threshold on go as a multipart upload, which is the "temporary name": write() creates it,
    records its UploadId at once (progress note) and sends the parts, `max_concurrency` at a time (as boto3's
    upload_file does: one connection cannot keep a store busy), recording after each one that completes the note
    {key, upload_id, part_size, sha256, parts: [[number, etag, sha256_b64], ...], ahead: [...]}: `parts` the
    contiguous run from part 1, `ahead` the parts that completed beyond a gap. The engine's offset is the bytes of that
    contiguous run, so a resume stays contiguous. After a restart held(path, note) checks both lists against ListParts
    (AWS's advice: keep your own list, use the listing to check; SeaweedFS's listing leaves the part checksums out, so
    they come from the note) and answers the bytes of the confirmed contiguous parts; write() goes on from there and
    skips the confirmed parts ahead. At most the parts in flight (max_concurrency) are sent again per interruption. A
    note about another key (the engine chose another name for the version) aborts that upload. The whole file's SHA-256 is
    computed before CreateMultipartUpload, since the metadata is fixed there: one local read of the staged file
    (cheap beside the network; set_context(sha256=...) spares it).
  Smaller files go as one PutObject: write() hashes the staged file and keeps a duplicate of its descriptor, publish()
    sends it. Nothing reaches the store before publish(), so there is nothing to resume or abort; a restart in
    between sends the file again (less than multipart_threshold bytes, like one part). The object then carries the
    store's own full SHA-256, and a small file costs one request instead of three.
  publish() is the CompleteMultipartUpload or the PutObject, with If-None-Match: * unless `replace`: a 412 raises
    FinalNameTaken (unless the name already holds these very bytes: a retry after a lost answer). On a store that
    ignores If-None-Match (rclone serve s3) it looks at the key first (a HEAD; a narrow race remains). So for a small
    file the engine does not look at the key before (publishes_exclusively): one PutObject, then the engine checks
    the published object through fingerprint() and deletes it and sends it again if it differs. For a PutObject that
    check is the PUT's own answer where it carries what the store computed (a store that checks
    x-amz-checksum-sha256 refuses other bytes and answers its SHA-256; an ETag that is the body's MD5 is compared with
    the MD5 of the bytes sent): a HEAD right after would answer what the store recorded from that same PUT. Else
    (a multipart upload, a store read back, an answer that does not match) one HEAD: its size and the store's digest.

Verification rests on what the store computed from the bytes it holds, never on what filesync claimed (the checksum
it sent, its own x-amz-meta-sha256): many stores (rclone serve s3, moto, Ceph RGW 16) accept a wrong
x-amz-checksum-sha256 and echo it back. So the first publish or verification on an endpoint sends a tiny object with a
wrong checksum (and whether If-None-Match is honoured; cached per endpoint for the process, see store();
`verified_by` says the answer):
  store checksum: the store refused it, so it checks what it is sent: every part and PutObject carries
    x-amz-checksum-sha256 (damaged bytes: BadDigest -> FileError, sent again), and digest() is the store's full-object
    SHA-256, or for a multipart object its composite checksum (of the parts' checksums, "<b64>-<parts>") compared with
    the composite of the parts this process sent.
  ETag MD5: the store took it, and its ETag was the MD5 of the bytes: a single-part object is checked by its ETag
    against the MD5 of the bytes sent (computed with the SHA-256, in the same local pass); so is every part as its
    UploadPart answers (a damaged part is sent again), and a multipart object by its ETag against the MD5 of the
    parts' MD5s ("-<parts>", as AWS and moto make it); a store whose multipart ETag is made otherwise (rclone serve s3:
    the whole object's MD5) has the object read back.
  read back: neither: the object is read back (ranged GETs, hashed as they arrive).
Where nothing the store computed confirms the bytes (an object this process did not publish, as in `filesync audit`),
digest() reads the object back. The whole file's SHA-256 still goes along as metadata (x-amz-meta-sha256, with the
source, the vehicle and the version's time) for people and the audit's metadata check; metadata keys are compared
without case (rclone serve s3 answers "Sha256").

Errors:
  connection refused, endpoint down, TLS certificate not accepted        -> DeviceUnavailable (wait, probe)
  bucket missing (NoSuchBucket)                                          -> DeviceUnavailable: wrong for every file
  InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied, any 403,
  RequestTimeTooSkewed ("the clock is off by ...")                        -> AuthRefused (wait; never names a secret)
  BadDigest, InvalidDigest, XAmzContentSHA256Mismatch                    -> FileError (sent again, then parked)
  NoSuchUpload (the store dropped the upload), NotImplemented to an
  UploadPart (rclone serve s3 will not replace a part it holds)          -> StartOver (the upload is aborted)
  a key over 1,024 bytes                                                 -> UnsafePath, before anything is sent
  5xx, SlowDown, timeouts, dropped connections                           -> TransientError
  other refusals (4xx)                                                   -> PermanentError with the store's message
"""
import base64
import hashlib
import json
import logging
import math
import os
import re
import socket
import threading
import uuid
import warnings
from collections import OrderedDict
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Optional
from urllib.parse import quote

import boto3
import botocore.auth
import botocore.exceptions
import urllib3
from botocore.config import Config

from filesync.devices.base import Target
from filesync.devices.s3.multipart import (MIB, READ_BLOCK, Pending, Staged, Upload, Window, b64,
                                           choose_part_size, composite_checksum, multipart_etag, part_size_check,
                                           threshold_check)
from filesync.devices.s3.store import (DIGEST_CODES, ETAG_MD5, PROBE_BODY, PROBE_NAME, STORE_CHECKSUM, Known,
                                       error_status, found_store, probe_store, store_of)
from filesync.errors import (AuthRefused, ConfigError, DeviceUnavailable, FileError, FilesyncError, FinalNameTaken,
                             PermanentError, StartOver, TransientError, UnsafePath)
from filesync.options import Option, expand_path, positive, resolve_secret, secret_options, template_check

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 1024
CLOCK_TOLERANCE = 300  # seconds; S3 refuses signatures more than 15 minutes off, so 5 already means a wrong clock
MESSAGE_LIMIT = 300
KEY_IN_MESSAGES = 120  # characters of a key shown in an error line

KEY_PLACEHOLDERS = ("vehicle", "source", "path")
AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "AccountProblem", "InvalidToken",
              "ExpiredToken", "InvalidSecurity", "AllAccessDisabled", "403"}
LATER_CODES = {"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "ServiceUnavailable",
               "InternalError", "OperationAborted", "ConditionalRequestConflict", "RequestTimeoutException"}
NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
READ_BACK_RANGE = 64 * MIB  # one ranged GET of a read-back: a broken one costs at most this much again
CONTINUE_FROM = MIB  # bodies from this size wait for the store's 100 Continue (see _no_continue_for_small_bodies)
KNOWN_KEPT = 256  # objects this process published whose store fingerprints it remembers (digest() right after)


def _no_continue_for_small_bodies(params, **_):
    """botocore asks for `Expect: 100-continue` before every body it can read, which waits a round trip for the
    store's go-ahead before sending; a body under CONTINUE_FROM goes at once (on a refusal, 412 or 403, the few
    bytes sent in vain cost less than that wait on every PUT)."""
    body = params.get("body")
    if params.get("headers", {}).get("Expect") and isinstance(body, Window) and body.length < CONTINUE_FROM:
        del params["headers"]["Expect"]


def _metadata_value(text):
    """Metadata travels in HTTP headers: keep printable ASCII, percent-encode the rest."""
    return quote(text, safe=" !#$&'()*+,-./:;<=>?@[]^_`{|}~")


def _duration(seconds):
    seconds = abs(int(round(seconds)))
    if seconds >= 2 * 86400:
        return f"{seconds // 86400} days"
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _metadata_of(head):
    """A HEAD's user metadata with lower-case keys (metadata names are case-insensitive HTTP headers)."""
    return {name.lower(): value for name, value in head.get("Metadata", {}).items()}


@dataclass
class _Context:
    """Who a file belongs to, for the key template and the object's metadata (see S3Target.set_context)."""
    source: str
    vehicle: str
    version_time: Optional[float] = None
    sha256: str = ""


class _SharedClient:
    """The boto3 client of a target's workers (S3Target.serve_with), made at first use."""

    def __init__(self):
        self.lock = threading.Lock()
        self.s3 = None


class S3Target(Target):
    """Uploads to an S3 bucket under keys made from key_template; see the module doc for how and why.

    Options: bucket; endpoint_url (empty: AWS); region; key_template with {vehicle}, {source} and {path} (empty
    components are dropped, so an empty source leaves no "//"); vehicle (default: this computer's host name) and source
    (default empty), which the engine's set_context() overrides; access_key_id and secret_access_key, each also as
    *_env or *_file, plus session_token likewise, or else profile or boto3's own chain (AWS_* environment variables,
    ~/.aws/credentials); ca_bundle and verify_tls; addressing_style (path, virtual or auto);
    request_checksum_calculation (when_supported, boto3's default, or when_required for stores that refuse the SDK's
    CRC trailers); multipart_threshold and part_size (0: chosen from the file size); max_concurrency (parts sent at
    once); connect_timeout, timeout (seconds) and max_attempts (boto3's tries per request); metadata (more
    x-amz-meta-* values).
    """

    kind = "s3"
    resumable = True
    verifiable = True
    digests = ("sha256",)
    readable = True
    can_delete = True

    OPTIONS = [
        Option("bucket", str, check=lambda value: None if value else "must not be empty",
               help="The bucket the objects go into; it must exist."),
        Option("endpoint_url", str, "",
               help="The store's URL (e.g. http://nas.local:8333); empty: AWS."),
        Option("region", str, "",
               help="The region requests are signed for; empty: boto3's own (the profile, AWS_DEFAULT_REGION), else "
                    "us-east-1."),
        Option("key_template", str, "{vehicle}/{source}/{path}",
               template_check(KEY_PLACEHOLDERS, "path", "or every file would land on one key"),
               help="Object key of each file, with {vehicle}, {source} and {path} ({path} required); empty components"
                    " are dropped."),
        Option("vehicle", str, "",
               help="{vehicle} in keys and the x-amz-meta-vehicle metadata where the engine gives none; empty: this "
                    "computer's host name."),
        Option("source", str, "",
               help="{source} in keys where the engine gives none (the engine gives the source's name)."),
        Option("profile", str, "",
               help="An AWS profile (~/.aws/config) to take credentials and region from."),
        Option("ca_bundle", str, "",
               help="A PEM file of the certificate authorities to trust instead of the system's."),
        Option("verify_tls", bool, True,
               help="false turns off the check of the store's TLS certificate (a loud warning)."),
        Option("addressing_style", str, "auto", choices=("auto", "path", "virtual"),
               help="How the bucket is named in URLs: path (http://host/bucket/key, most self-hosted stores), virtual"
                    " (http://bucket.host/key) or auto."),
        Option("request_checksum_calculation", str, "when_supported", choices=("when_supported", "when_required"),
               help="when_supported (boto3's default) or when_required, for stores that refuse boto3's CRC trailers."),
        Option("multipart_threshold", int, 8 * MIB, threshold_check,
               help="Size in bytes from which a file goes as a resumable multipart upload; smaller files go as one "
                    "PutObject, sent again whole after an interruption."),
        Option("part_size", int, 0, part_size_check,
               help="Bytes per part of a multipart upload, 5 MiB to 5 GiB; 0: 8 MiB, more for files over about 8 GB "
                    "(at most 1,000 parts)."),
        # Parts in flight at once. One at a time reached 0.65-0.79 of upload_file (10 threads) to SeaweedFS on
        # loopback; 4 at once 0.88-1.32 (median 1.08) in paired 1 GiB runs, 8 no better (0.84-1.27) and 12 MiB more
        # peak RSS (docs/benchmarks.md). Memory: about 1-3 MiB per part in flight, whatever the file size.
        Option("max_concurrency", int, 4, lambda value: None if 1 <= value <= 32 else "must be from 1 to 32",
               help="Parts of one upload sent at once (1 to 32); each costs about 1 to 3 MiB of memory, and up to "
                    "this many parts are sent again per interruption."),
        Option("connect_timeout", float, 10.0, positive,
               help="Seconds to wait for a connection to the store."),
        Option("timeout", float, 120.0, positive,
               help="Seconds to wait for an answer (boto3's read timeout)."),
        Option("max_attempts", int, 2, positive,
               help="boto3's tries per request; filesync's own retries come on top."),
        Option("metadata", dict, {}, lambda value: None if all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()) else "expected a mapping of strings",
               help="More x-amz-meta-* values put on every object, name to text."),
    ] + secret_options("access_key_id", "the access key id (none: boto3's own credential chain)") + \
        secret_options("secret_access_key", "the secret access key") + \
        secret_options("session_token", "the session token of temporary credentials")

    LIST_PAGE = 1000  # ListParts page size: S3's largest (a test makes it small to walk the pages)

    def __init__(self, name, raw_options, key, context=None):
        super().__init__(name, raw_options, key, context)
        options = self.options
        self.bucket = options["bucket"]
        if options["ca_bundle"]:
            bundle = expand_path(options["ca_bundle"])
            if not os.path.isfile(bundle):
                raise ConfigError(f"{key}.ca_bundle: no such file {bundle}")
            if not options["verify_tls"]:
                raise ConfigError(f"{key}.verify_tls: false contradicts ca_bundle; give one of them")
            self._verify = bundle
        else:
            self._verify = options["verify_tls"]
        if not options["verify_tls"]:
            log.warning("%s: verify_tls is false: the store's TLS certificate is NOT checked; anyone on the path can "
                        "read and change the uploads", key)
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        self._credentials()  # a missing variable or file, or half a key pair, is a config error at start
        self._shared = _SharedClient()
        self._state_lock = threading.Lock()
        self._uploads = {}  # key -> Upload (multipart uploads held for the next write()/publish())
        self._pending = {}  # key -> Pending (small files waiting for publish())
        self._known = OrderedDict()  # key -> Known: the last KNOWN_KEPT objects published
        self._local = threading.local()

    # --- configuration, client, keys -------------------------------------------------------------------------------

    def _credentials(self):
        """The configured key pair (and token) as boto3 arguments; empty to use boto3's own credential chain."""
        key_id = resolve_secret(self.options, self.key, "access_key_id")
        secret = resolve_secret(self.options, self.key, "secret_access_key")
        token = resolve_secret(self.options, self.key, "session_token")
        if bool(key_id) != bool(secret):
            missing = "secret_access_key" if key_id else "access_key_id"
            raise ConfigError(f"{self.key}.{missing}: required with "
                              f"{'access_key_id' if key_id else 'secret_access_key'} (or give neither to use the "
                              f"environment's AWS credentials)")
        if not key_id:
            return {}
        credentials = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
        if token:
            credentials["aws_session_token"] = token
        return credentials

    def _secrets(self):
        """Texts that must never appear in a message: the key id, the secret and the token."""
        return [value for name in ("access_key_id", "secret_access_key", "session_token")
                for value in [resolve_secret(self.options, self.key, name)] if value]

    def serve_with(self, first):
        """Use `first`'s boto3 client (one per target, thread-safe): one connection pool and one set of credentials
        for every worker, instead of a client of about 13 MiB each."""
        self._shared = first._shared

    def _client(self):
        shared = self._shared
        with shared.lock:
            if shared.s3 is None:
                options = self.options
                try:
                    session = boto3.session.Session(profile_name=options["profile"] or None)
                except botocore.exceptions.ProfileNotFound:
                    raise ConfigError(f"{self.key}.profile: no AWS profile {options['profile']!r}") from None
                # Where the store checks x-amz-checksum-sha256 (when_supported), the signed checksum header already
                # binds the body to the signature: botocore's own SHA-256 of every body for the signature (which it
                # does over plain HTTP) would be a second pass over every byte, about 0.8 CPU s/GiB here.
                payload_signing = options["request_checksum_calculation"] == "when_required"
                config = Config(
                    region_name=options["region"] or session.region_name or "us-east-1",
                    signature_version="s3v4",
                    s3={"addressing_style": options["addressing_style"], "payload_signing_enabled": payload_signing},
                    request_checksum_calculation=options["request_checksum_calculation"],
                    response_checksum_validation="when_required",  # the checks here are filesync's own
                    connect_timeout=options["connect_timeout"], read_timeout=options["timeout"],
                    retries={"mode": "standard", "total_max_attempts": options["max_attempts"]},
                    tcp_keepalive=True,
                    # every worker (serve_with) with all its parts in flight keeps a connection
                    max_pool_connections=max(10, options["transfers"] * options["max_concurrency"]))
                shared.s3 = session.client("s3", endpoint_url=options["endpoint_url"] or None, verify=self._verify,
                                           config=config, **self._credentials())
                shared.s3.meta.events.register_last("before-call.s3", _no_continue_for_small_bodies)
            return shared.s3

    def set_context(self, source=None, vehicle=None, version_time=None, sha256="", version_id=0):
        """Say whose file the following calls on this thread are about: the source's name, the vehicle, the version's
        modification time (epoch seconds) and, where the engine knows it, the staged file's SHA-256 (hex; saves a
        local pass over the file). Until called, the `source` and `vehicle` options apply."""
        self._local.context = _Context(source if source is not None else self.options["source"],
                                       vehicle if vehicle is not None else self._default_vehicle(),
                                       version_time, sha256)

    def _default_vehicle(self):
        return self.options["vehicle"] or socket.gethostname()

    def _context(self):
        context = getattr(self._local, "context", None)
        if context is None:
            context = _Context(self.options["source"], self._default_vehicle())
        return context

    def key_for(self, path):
        """The object key of `path` from key_template; UnsafePath if it is over S3's 1,024 bytes."""
        context = self._context()
        key = self.options["key_template"].format(vehicle=context.vehicle, source=context.source, path=path)
        key = "/".join(part for part in key.split("/") if part)
        if len(key.encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES:
            raise UnsafePath(f"{self.name}: the S3 key for {path[:60]!r}... would be "
                             f"{len(key.encode('utf-8', 'surrogateescape'))} bytes; S3 takes at most {MAX_KEY_BYTES}")
        return key

    def location(self, path):
        """s3://<bucket>/<key>."""
        return f"s3://{self.bucket}/{self.key_for(path)}"

    def _metadata(self, sha256_hex):
        context = self._context()
        metadata = {name: _metadata_value(value) for name, value in self.options["metadata"].items()}
        metadata.update({"sha256": sha256_hex, "vehicle": _metadata_value(context.vehicle)})
        if context.source:
            metadata["source"] = _metadata_value(context.source)
        if context.version_time is not None:
            metadata["version-time"] = datetime.fromtimestamp(context.version_time, timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ")
        return metadata

    # --- errors ----------------------------------------------------------------------------------------------------

    def _what(self, operation, key=None):
        where = f"s3://{self.bucket}/{key[:KEY_IN_MESSAGES]}{'...' if len(key) > KEY_IN_MESSAGES else ''}" \
            if key is not None else f"bucket {self.bucket}"
        return f"{self.name}: {operation} {where}"

    def _redact(self, text):
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return " ".join(text.split())[:MESSAGE_LIMIT]

    def _error(self, error, operation, key=None):
        """filesync's error for what boto3 raised during `operation` (see the module doc's table)."""
        what = self._what(operation, key)
        if isinstance(error, botocore.exceptions.ClientError):
            return self._refusal(error, what)
        if isinstance(error, botocore.exceptions.SSLError):
            reason = re.search(r"certificate verify failed: (.*?)(?: \(_ssl|$)", str(error))
            reason = reason.group(1) if reason else self._redact(str(error))
            return DeviceUnavailable(f"{what}: TLS: the store's certificate is not accepted: {reason}")
        if isinstance(error, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
                              botocore.exceptions.ProxyConnectionError)):
            endpoint = self.options["endpoint_url"] or "the AWS endpoint"
            return DeviceUnavailable(f"{what}: cannot connect to {endpoint}")
        if isinstance(error, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError,
                              botocore.exceptions.CredentialRetrievalError)):
            return AuthRefused(f"{what}: no S3 credentials found: give access_key_id and secret_access_key (or their "
                               f"_env/_file forms), a profile, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        if isinstance(error, botocore.exceptions.ParamValidationError):
            return PermanentError(f"{what}: {self._redact(str(error))}")
        if isinstance(error, botocore.exceptions.BotoCoreError):
            return TransientError(f"{what}: {self._redact(str(error))}")
        return error

    def _refusal(self, error, what):
        response = error.response
        code = str(response.get("Error", {}).get("Code", ""))
        message = response.get("Error", {}).get("Message", "") or code
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        text = self._redact(f"{what}: {message} ({code}, HTTP {status})")
        if code == "RequestTimeTooSkewed" or status == 403 or code in AUTH_CODES:
            offset = self._clock_offset(response)
            if code == "RequestTimeTooSkewed" or (offset is not None and abs(offset) > CLOCK_TOLERANCE):
                if offset is None:
                    return AuthRefused(f"{what}: the clock is off: the store refuses the request's time "
                                       f"(RequestTimeTooSkewed); set this computer's clock (NTP)")
                return AuthRefused(f"{what}: the clock is off by {_duration(offset)}: this computer's clock is "
                                   f"{'behind' if offset > 0 else 'ahead of'} the store's, which refuses signed "
                                   f"requests more than 15 min off; set the clock (NTP)")
            reason = {"InvalidAccessKeyId": "the store does not know the access key id",
                      "SignatureDoesNotMatch": "the secret access key does not match the access key id",
                      }.get(code, "access denied: wrong credentials, or no permission for this bucket")
            return AuthRefused(f"{what}: {reason} ({code or status})")
        if code == "NoSuchBucket":
            return DeviceUnavailable(f"{self.name}: bucket {self.bucket} does not exist at "
                                     f"{self.options['endpoint_url'] or 'AWS'}")
        if code in DIGEST_CODES:
            return FileError(f"{what}: the store refused the bytes as damaged, they will be sent again: {text}")
        if code == "KeyTooLongError":
            return UnsafePath(text)
        if code == "NoSuchUpload":
            return StartOver(f"{what}: the store no longer holds the upload; it starts over")
        if code == "NotImplemented" and " UploadPart " in f" {what} ":
            # rclone serve s3 streams each part into place and will not take a part number again with other bytes
            return StartOver(f"{what}: the store will not replace a part it holds; the upload starts over: {text}")
        if status >= 500 or status in (408, 409, 429) or code in LATER_CODES:
            return TransientError(text)
        return PermanentError(text)

    @staticmethod
    def _clock_offset(response):
        """The store's clock minus the one requests are signed with, in seconds, from the answer's Date header."""
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        if not date:
            return None
        try:
            server = parsedate_to_datetime(date).astimezone(timezone.utc).replace(tzinfo=None)
        except (TypeError, ValueError):
            return None
        return (server - botocore.auth.get_current_datetime()).total_seconds()

    def _call(self, operation, key, method, **arguments):
        """Call a client method with Bucket (and Key) filled in; raise filesync's errors."""
        arguments["Bucket"] = self.bucket
        if key is not None:
            arguments["Key"] = key
        try:
            return getattr(self._client(), method)(**arguments)
        except Exception as error:  # every boto3 failure is mapped; anything else goes up as it is
            mapped = self._error(error, operation, key)
            if mapped is error:
                raise
            raise mapped from None

    def _head(self, key, operation="HEAD"):
        """HeadObject with the store's checksum; None when there is no such object."""
        try:
            return self._client().head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except Exception as error:
            code, status = error_status(error)
            if status == 404 or code in NOT_FOUND_CODES:
                return None
            mapped = self._error(error, operation, key)
            if mapped is error:
                raise
            raise mapped from None

    # --- verification ----------------------------------------------------------------------------------------------

    def _endpoint(self):
        return self.options["endpoint_url"] or f"AWS {self.options['region'] or 'default region'}"

    @property
    def verified_by(self):
        """How published copies are verified on this endpoint: STORE_CHECKSUM, ETAG_MD5 or READ_BACK (see the module
        doc); '' until the first publish or verification found out. Never asks the store (the status reads it)."""
        found = found_store(self._endpoint())
        return found.verification if found else ""

    def verification(self):
        """How this endpoint's copies are verified (see store())."""
        return self.store().verification

    def store(self):
        """What this endpoint does, found at the first call in this process (three or four PUTs of a tiny object,
        then its DELETE: once sent with a wrong checksum, then twice right, the second with If-None-Match: *), then
        kept for every target on the same endpoint (store.py)."""
        return store_of(self._endpoint(), self._probe_store)

    def _probe_store(self):
        key = self.key_for(f"{PROBE_NAME}-{uuid.uuid4().hex[:12]}")
        try:
            found = probe_store(lambda **extra: self._client().put_object(Bucket=self.bucket, Key=key,
                                                                          Body=PROBE_BODY, **extra))
        except Exception as error:
            mapped = self._error(error, "store probe PUT", key)
            if mapped is error:
                raise
            raise mapped from None
        try:
            self._call("store probe DELETE", key, "delete_object")
        except (AuthRefused, PermanentError) as error:  # a policy may allow PUT and not DELETE: no reason to stop
            log.warning("%s: the probe object %s stays on the bucket (%d bytes): %s", self.name, key,
                        len(PROBE_BODY), error)
        log.info("%s: %s is verified by %s%s", self.name, self._endpoint(), found.verification,
                 "" if found.if_none_match else "; it ignores If-None-Match, so a name is looked at before publishing")
        return found

    def _remember(self, key, known):
        with self._state_lock:
            self._known[key] = known
            self._known.move_to_end(key)
            while len(self._known) > KNOWN_KEPT:
                self._known.popitem(last=False)

    def _stored_sha256(self, key, head):
        """The SHA-256 (hex) of the bytes the store holds under `key` (`head` its HEAD), from what the store computed:
        its full-object checksum where it checks checksums; its composite checksum or ETag where they are those of
        the bytes this process published there; else read back."""
        verification = self.verification()
        checksum = head.get("ChecksumSHA256") or ""
        with self._state_lock:
            known = self._known.get(key)
        if verification == STORE_CHECKSUM:
            if checksum and "-" not in checksum:
                return base64.b64decode(checksum).hex()
            if known is not None and known.composite and known.composite == checksum:
                return known.sha256
        elif verification == ETAG_MD5:
            if known is not None and known.etag and known.etag == head.get("ETag", "").strip('"'):
                return known.sha256
        digest = hashlib.sha256()
        for block in self._ranges(key, head):
            digest.update(block)
        return digest.hexdigest()

    def _ranges(self, key, head):
        """The bytes of the object `head` describes, by ranged GETs of READ_BACK_RANGE (If-Match its ETag, so that an
        object replaced meanwhile is not read as a mix), in blocks of READ_BLOCK."""
        size, etag = head["ContentLength"], head.get("ETag")
        condition = {"IfMatch": etag} if etag else {}
        for start in range(0, size, READ_BACK_RANGE):
            end = min(size, start + READ_BACK_RANGE)
            try:
                answer = self._client().get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}",
                                                   **condition)
            except Exception as error:
                code, status = error_status(error)
                if status == 412 or code == "PreconditionFailed":
                    raise TransientError(f"{self._what('GET', key)}: the object changed while it was read") from None
                mapped = self._error(error, "GET", key)
                if mapped is error:
                    raise
                raise mapped from None
            body, position = answer["Body"], start
            try:
                while position < end:
                    try:
                        block = body.read(min(READ_BLOCK, end - position))
                    except Exception as error:
                        mapped = self._error(error, "GET", key)
                        if mapped is error:
                            raise TransientError(f"{self._what('GET', key)}: the transfer broke off: {error}") \
                                from None
                        raise mapped from None
                    if not block:
                        raise TransientError(f"{self._what('GET', key)}: the answer ended at byte {position} of "
                                             f"{size}")
                    position += len(block)
                    yield block
            finally:
                body.close()

    # --- the Target interface --------------------------------------------------------------------------------------

    def probe(self):
        """HeadBucket: DeviceUnavailable when the store cannot be reached or the bucket is missing, AuthRefused when
        the credentials are refused."""
        try:
            self._client().head_bucket(Bucket=self.bucket)
        except Exception as error:
            code, status = error_status(error)
            if status == 404 or code in ("NoSuchBucket", "404"):
                raise DeviceUnavailable(f"{self.name}: bucket {self.bucket} does not exist at "
                                        f"{self.options['endpoint_url'] or 'AWS'}") from None
            mapped = self._error(error, "HeadBucket")
            if mapped is error:
                raise
            raise mapped from None

    def stat(self, path):
        """The object's size (HEAD), or None when there is none."""
        head = self._head(self.key_for(path))
        return None if head is None else head["ContentLength"]

    def digest(self, path, algorithm):
        """The object's SHA-256 in hex, from what the store computed over the bytes it holds (never from the checksum
        or the x-amz-meta-sha256 filesync sent, which a store may just echo): see the module doc."""
        if algorithm != "sha256":
            return super().digest(path, algorithm)
        key = self.key_for(path)
        head = self._head(key)
        if head is None:
            raise PermanentError(f"{self._what('digest of', key)}: there is no such object")
        return self._stored_sha256(key, head)

    def fingerprint(self, path, algorithm):
        """The object's size and SHA-256 (as digest() finds it) from one HEAD; (None, '') when there is none. Right
        after this thread's publish() of a small file whose PutObject answer confirmed its bytes (_put_confirms),
        from that answer instead."""
        if algorithm != "sha256":
            return super().fingerprint(path, algorithm)
        key = self.key_for(path)
        confirmed, self._local.confirmed = getattr(self._local, "confirmed", None), None
        if confirmed is not None and confirmed[0] == key:
            return confirmed[1], confirmed[2]
        head = self._head(key)
        if head is None:
            return None, ""
        return head["ContentLength"], self._stored_sha256(key, head)

    def publishes_exclusively(self, size):
        """A file under multipart_threshold goes whole in publish()'s PutObject, which refuses a taken key (If-None-
        Match: *, or a HEAD just before where the store ignores that): the engine need not look at the key first.
        A multipart upload is looked at first: its parts would be sent before the refusal."""
        return size < self.options["multipart_threshold"]

    def check_stored(self, path, sha256, note=""):
        """For an audit: what the store says about the object beyond its size, against the version's `sha256` (hex)
        and the upload's resume `note`: the x-amz-meta-sha256 and -vehicle filesync sent, and the store's checksum
        (the object's SHA-256, or for a multipart object the composite of the parts in the note). One text per
        disagreement; [] when all agree."""
        key = self.key_for(path)
        head = self._head(key)
        if head is None:
            return ["there is no such object"]
        problems = []
        metadata = _metadata_of(head)
        if metadata.get("sha256") != sha256:
            problems.append(f"x-amz-meta-sha256 is {metadata.get('sha256') or 'missing'}, the ledger's is {sha256}")
        vehicle = _metadata_value(self._context().vehicle)
        if metadata.get("vehicle") != vehicle:
            problems.append(f"x-amz-meta-vehicle is {metadata.get('vehicle') or 'missing'}, expected {vehicle}")
        checksum = head.get("ChecksumSHA256") or ""
        if checksum and "-" not in checksum:
            if base64.b64decode(checksum).hex() != sha256:
                problems.append(f"the store's SHA-256 is {base64.b64decode(checksum).hex()}, the ledger's is {sha256}")
        elif checksum:
            try:
                parts = [str(part[2]) for part in json.loads(note)["parts"]] if note else []
            except (ValueError, KeyError, TypeError, IndexError):
                parts = []
            if parts and composite_checksum(parts) != checksum:
                problems.append(f"the store's checksum is {checksum}, the parts filesync sent make "
                                f"{composite_checksum(parts)}")
        return problems

    def read(self, path):
        """Stream the object's bytes (ranged GETs) in 1 MiB blocks."""
        key = self.key_for(path)
        head = self._head(key, "GET")
        if head is None:
            raise PermanentError(f"{self._what('GET', key)}: there is no such object")
        yield from self._ranges(key, head)

    def delete(self, path):
        """DeleteObject (S3 answers alike whether or not the object existed)."""
        key = self.key_for(path)
        self._call("DELETE", key, "delete_object")
        with self._state_lock:
            self._known.pop(key, None)

    def held(self, path, note=""):
        """The bytes of the parts of the upload in `note` (or, without one, of the upload this object holds for
        `path`) that ListParts confirms, contiguous from part 1. 0 when the store no longer knows the upload (write()
        then starts anew) and when the note is about another key (the engine chose another name: that upload is
        aborted). A small file kept for publish() counts as held whole: nothing of it is on the store yet, and
        publish() sends it."""
        key = self.key_for(path)
        with self._state_lock:
            pending = self._pending.get(key)
            kept = self._uploads.pop(key, None)
        if pending is not None and not note:
            return pending.size
        if not note:
            if kept is None:
                return 0
            note = kept.note(key)
        try:
            record = json.loads(note)
            upload = Upload(str(record["upload_id"]), int(record["part_size"]), str(record["sha256"]))
            noted = [[int(n), str(etag), str(checksum)] for n, etag, checksum in
                     record["parts"] + record.get("ahead", [])]
            noted_key = str(record.get("key", key))
        except (ValueError, KeyError, TypeError):
            log.warning("%s: the resume note of %s cannot be read; the upload starts over", self.name, path)
            return 0
        if noted_key != key:
            self._abort(noted_key, upload.upload_id)
            return 0
        listed = self._listed_parts(key, upload.upload_id)
        if listed is None:
            log.info("%s: the store no longer holds upload %s of %s; it starts over", self.name, upload.upload_id,
                     path)
            return 0
        for number, etag, checksum in noted:
            if number in listed and listed[number][0] == etag:  # the store holds this very part
                upload.ahead[number] = (etag, checksum, listed[number][1])
        upload.advance()
        with self._state_lock:
            self._uploads[key] = upload
        return upload.held

    def _listed_parts(self, key, upload_id):
        """{part number: (etag, size)} from ListParts, every page; None when the store does not know the upload."""
        parts, marker = {}, 0
        while True:
            try:
                page = self._client().list_parts(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                 PartNumberMarker=marker, MaxParts=self.LIST_PAGE)
            except Exception as error:
                if error_status(error)[0] == "NoSuchUpload" or error_status(error)[1] == 404:
                    return None
                mapped = self._error(error, "ListParts", key)
                if mapped is error:
                    raise
                raise mapped from None
            for part in page.get("Parts", []):
                parts[part["PartNumber"]] = (part["ETag"].strip('"'), part["Size"])
            if not page.get("IsTruncated"):
                return parts
            next_marker = int(page.get("NextPartNumberMarker") or 0)
            if next_marker <= marker:
                raise TransientError(f"{self._what('ListParts', key)}: the listing does not advance")
            marker = next_marker

    def discard(self, path):
        """Abort the multipart upload of `path` and any other the store lists for its key; drop a waiting small file."""
        key = self.key_for(path)
        with self._state_lock:
            upload = self._uploads.pop(key, None)
            pending = self._pending.pop(key, None)
        if pending is not None:
            pending.staged.close()
        upload_ids = {upload.upload_id} if upload else set()
        upload_ids |= self._listed_uploads(key)
        for upload_id in sorted(upload_ids):
            self._abort(key, upload_id)

    def _listed_uploads(self, key):
        """The UploadIds of the multipart uploads in progress for exactly `key` (ListMultipartUploads, every page)."""
        found, markers = set(), {}
        while True:
            try:
                page = self._call("ListMultipartUploads", None, "list_multipart_uploads", Prefix=key, **markers)
            except StartOver:  # NoSuchUpload: rclone serve s3's answer when none is open
                return found
            found |= {upload["UploadId"] for upload in page.get("Uploads", []) if upload["Key"] == key}
            if not page.get("IsTruncated"):
                return found
            markers = {"KeyMarker": page.get("NextKeyMarker", ""), "UploadIdMarker": page.get("NextUploadIdMarker", "")}

    def _abort(self, key, upload_id):
        try:
            self._call("AbortMultipartUpload", key, "abort_multipart_upload", UploadId=upload_id)
        except StartOver:  # NoSuchUpload: gone already
            pass

    def write(self, path, stream, offset, size, progress):
        """Small files: hash and keep for publish(). Larger ones: create or continue the multipart upload and send its
        parts from `offset`, recording the note after each (see the module doc)."""
        key = self.key_for(path)
        staged = Staged(stream)
        if size < self.options["multipart_threshold"]:
            if offset:
                raise StartOver(f"{self._what('upload of', key)}: a file under multipart_threshold goes whole")
            md5 = hashlib.md5(usedforsecurity=False)
            checksum = staged.sha256(0, size, also=md5)
            pending = Pending(staged.kept(size), size, b64(checksum.digest()), md5.hexdigest(),
                               self._metadata(checksum.hexdigest()))
            with self._state_lock:
                previous = self._pending.pop(key, None)
                self._pending[key] = pending
            if previous is not None:
                previous.staged.close()
            progress(size)
            return
        with self._state_lock:
            upload = self._uploads.get(key)
        if offset:
            if upload is None or upload.held != offset:
                raise StartOver(f"{self._what('upload of', key)}: no upload held at byte {offset}; it starts over")
        else:
            if upload is not None:  # the engine starts over: the old upload's metadata may be another version's
                self._abort(key, upload.upload_id)
            upload = self._create(key, size, staged)
            progress(0, upload.note(key))
        self._send_parts(key, upload, staged, size, progress)

    def _create(self, key, size, staged):
        sha256 = self._context().sha256 or staged.sha256(0, size).hexdigest()
        answer = self._call("CreateMultipartUpload", key, "create_multipart_upload", ChecksumAlgorithm="SHA256",
                            Metadata=self._metadata(sha256))
        upload = Upload(answer["UploadId"], choose_part_size(size, self.options["part_size"]), sha256)
        with self._state_lock:
            self._uploads[key] = upload
        return upload

    def _send_parts(self, key, upload, staged, size, progress):
        """Send every part after the contiguous run that is not already held ahead, max_concurrency at a time. Each
        completed part goes into the note at once (progress from this thread: the engine's ledger calls and bandwidth
        limit stay on it); after a failure no new part starts, the parts in flight finish and are recorded, then the
        first failure is raised."""
        for number in [n for n, (_, _, length) in upload.ahead.items()
                       if length != min(upload.part_size, size - (n - 1) * upload.part_size)]:
            del upload.ahead[number]  # not this file's part of that number after all: sent again
        self.verification()  # found once here, not by every thread at once (_send_part asks it)
        first = len(upload.parts) + 1
        todo = [(number, (number - 1) * upload.part_size) for number in range(first, math.ceil(size /
                upload.part_size) + 1) if number not in upload.ahead]
        todo = iter([(number, start, min(upload.part_size, size - start)) for number, start in todo])
        failure, recording = None, True
        workers = self.options["max_concurrency"]
        with ThreadPoolExecutor(workers, thread_name_prefix=f"s3-{self.name}") as pool:
            running = {}

            def start_more():
                for number, start, length in todo:
                    running[pool.submit(self._send_part, key, upload.upload_id, staged, number, start, length)] = \
                        number
                    if len(running) >= workers:
                        return
            start_more()
            if upload.advance():  # parts confirmed ahead that continue the run
                progress(upload.held, upload.note(key))
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    number = running.pop(future)
                    try:
                        upload.ahead[number] = future.result()
                    except BaseException as error:  # noqa: BLE001 - raised below, once the others are in
                        failure = failure or error
                if recording:  # the note changes with every part: into the run, or ahead of it
                    upload.advance()
                    try:
                        progress(upload.held, upload.note(key))
                    except BaseException as error:  # noqa: BLE001 - the engine stops the upload (LeaseLost...)
                        failure, recording = failure or error, False
                if failure is None:
                    start_more()
        if isinstance(failure, StartOver):
            with self._state_lock:
                self._uploads.pop(key, None)
            try:  # no use to anyone now; the engine's start from byte 0 creates another
                self._abort(key, upload.upload_id)
            except FilesyncError as error:
                log.warning("%s: the abandoned upload is left to discard(): %s", self.name, error)
        if failure is not None:
            raise failure
        if upload.held != size:
            raise FileError(f"{self._what('upload of', key)}: the parts hold {upload.held} of {size} bytes")

    def _send_part(self, key, upload_id, staged, number, start, length):
        """UploadPart of bytes [start, start + length) with their SHA-256; returns (etag, checksum, length). On a store
        whose ETag is the MD5 of what it got, FileError where the part's ETag is not its MD5 (damaged on the way)."""
        md5 = hashlib.md5(usedforsecurity=False) if self.verification() == ETAG_MD5 else None
        checksum = b64(staged.sha256(start, length, also=md5).digest())
        answer = self._call(f"UploadPart {number}", key, "upload_part", UploadId=upload_id, PartNumber=number,
                            Body=Window(staged, start, length), ContentLength=length, ChecksumSHA256=checksum)
        etag = answer["ETag"].strip('"')
        if md5 is not None and etag != md5.hexdigest():
            raise FileError(f"{self._what(f'UploadPart {number} of', key)}: the store's MD5 of the part (its ETag) is "
                            f"{etag}, the part's is {md5.hexdigest()}: damaged on the way; it is sent again")
        return etag, checksum, length

    def publish(self, path, size, replace=False):
        """Complete the multipart upload, or PUT the small file, with If-None-Match: * unless `replace`; a 412 raises
        FinalNameTaken unless the key already holds these bytes. The engine checks the object afterwards (digest()),
        from what this publish tells the store must compute for these bytes (its ETag, its composite checksum)."""
        key = self.key_for(path)
        condition = {} if replace else {"IfNoneMatch": "*"}
        with self._state_lock:
            pending = self._pending.get(key)
            upload = self._uploads.get(key)
        if pending is not None:
            if pending.size != size:
                raise StartOver(f"{self._what('PUT', key)}: {pending.size} bytes were staged for it, not {size}")
            known = Known(base64.b64decode(pending.checksum).hex(), etag=pending.md5)
            operation = "PUT"
            send = lambda: self._client().put_object(  # noqa: E731
                Bucket=self.bucket, Key=key, Body=Window(pending.staged, 0, size), ContentLength=size,
                ChecksumSHA256=pending.checksum, Metadata=pending.metadata, **condition)
        elif upload is not None:
            if upload.held != size:
                raise StartOver(f"{self._what('CompleteMultipartUpload', key)}: the parts hold {upload.held} of "
                                f"{size} bytes")
            known = Known(upload.sha256, etag=multipart_etag([etag for _, etag, _ in upload.parts]),
                           composite=composite_checksum([checksum for _, _, checksum in upload.parts]))
            operation = "CompleteMultipartUpload"
            parts = [{"PartNumber": number, "ETag": f'"{etag}"', "ChecksumSHA256": checksum}
                     for number, etag, checksum in upload.parts]
            send = lambda: self._client().complete_multipart_upload(  # noqa: E731
                Bucket=self.bucket, Key=key, UploadId=upload.upload_id, MultipartUpload={"Parts": parts},
                **condition)
        else:
            raise StartOver(f"{self._what('publish of', key)}: nothing of it is held here (filesync restarted since "
                            f"it was sent); it is sent again")
        self._remember(key, known)
        self._local.confirmed = None
        answer = None
        if condition and not self.store().if_none_match and self._head(key, f"HEAD before {operation}") is not None:
            # the store would replace it (it ignores If-None-Match): looked at first, a narrow race remains
            if not self._holds(key, size, known.sha256):
                raise FinalNameTaken(f"{self._what(operation, key)}: the key holds another object")
        else:
            answer = self._finish(send, operation, key, size, known.sha256)
        with self._state_lock:
            self._uploads.pop(key, None)
            self._pending.pop(key, None)
        if pending is not None:
            pending.staged.close()
            if answer is not None and self._put_confirms(answer, pending):
                self._local.confirmed = (key, size, known.sha256)
        elif condition and answer is None:  # the key held these bytes already: this upload is not needed
            self._abort(key, upload.upload_id)
        return self.location(path)

    def _put_confirms(self, answer, pending):
        """Whether the PutObject's own answer shows what the store computed from the bytes it took is this file's: a
        store that checks x-amz-checksum-sha256 stored nothing else (damaged bytes are refused with BadDigest), and
        answers its SHA-256; a store whose ETag is the body's MD5 answers that MD5. Then the engine's check right
        after (fingerprint()) needs no HEAD: it would answer what the store recorded from this same PUT."""
        verification = self.verification()
        if verification == STORE_CHECKSUM:
            return answer.get("ChecksumSHA256", pending.checksum) == pending.checksum
        return verification == ETAG_MD5 and answer.get("ETag", "").strip('"') == pending.md5

    def _finish(self, send, operation, key, size, sha256_hex):
        """Run the PUT or CompleteMultipartUpload `send`: the store's answer when it stored the object, None when the
        key already held these bytes (a 412, or NoSuchUpload after a lost answer); FinalNameTaken when it holds
        others."""
        try:
            return send()
        except Exception as error:
            code, status = error_status(error)
            if status == 412 or code == "PreconditionFailed":
                if not self._holds(key, size, sha256_hex):
                    raise FinalNameTaken(f"{self._what(operation, key)}: the key holds another object") from None
                return None
            if code == "NoSuchUpload" and self._holds(key, size, sha256_hex):
                return None  # completed before, and the answer was lost
            mapped = self._error(error, operation, key)
            if mapped is error:
                raise
            if isinstance(mapped, StartOver):
                with self._state_lock:
                    self._uploads.pop(key, None)
            raise mapped from None

    def _holds(self, key, size, sha256_hex):
        """Whether the object under `key` has `size` bytes with SHA-256 `sha256_hex` (as digest() finds it)."""
        head = self._head(key, "HEAD after upload of")
        return head is not None and head["ContentLength"] == size and self._stored_sha256(key, head) == sha256_hex

    def close(self):
        """Close the client's connections; the next call opens new ones. Uploads held for resume stay held."""
        shared = self._shared
        with shared.lock:
            if shared.s3 is not None:
                shared.s3.close()
                shared.s3 = None
