"""The filesync configuration: one mapping (a YAML file, loaded as ROS params under /filesync) checked in one place.

load_config() raises ConfigError with one line naming the bad key; devices check their own options when built.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, List

import yaml

from filesync.devices import source_class, target_class
from filesync.errors import ConfigError
from filesync.options import (Option, expand_path, not_negative, parse_options, port_number, positive, resolve_secret,
                              secret_options)
from filesync.ui.web import MAX_CONNECTIONS, REQUEST_TIMEOUT, is_loopback

TOP_LEVEL = [
    Option("staging_dir", str, "~/filesync/staging",
           help="Local folder where every version is staged (<staging_dir>/<source>/<id>) between its download and "
                "its uploads; give it a disk with room for the files in flight."),
    Option("database", str, "",
           help="Path of the ledger's SQLite file; empty: $ROS_HOME/filesync/ledger.db (ROS_HOME defaults to ~/.ros)."),
    Option("checkpoint_bytes", int, 1 << 20, positive,
           help="Bytes a download copies between two recorded checkpoints, so at most this much is copied again per "
                "interruption and transfer; default 1 MiB."),
    Option("scan_interval", float, 10.0, positive,
           help="Seconds between two listings of each source (each listing stats every file in it)."),
    Option("poll_interval", float, 10.0, positive,
           help="Seconds between a worker's looks at the ledger when no event woke it."),
    Option("lease_seconds", float, 30.0, positive,
           help="Seconds a claimed transfer may go unrenewed before another worker may take it over (after a crash)."),
    Option("retry_base", float, 2.0, positive,
           help="Seconds before the first retry of a transient failure; each further retry waits twice as long, with "
                "jitter, up to retry_cap."),
    Option("retry_cap", float, 300.0, positive,
           help="Longest wait in seconds between two retries of a transient failure."),
    Option("max_attempts", int, 5, positive,
           help="Tries of a file that keeps failing on its own (a bad block, a refused name) before it is parked with"
                " its reason."),
    Option("bwlimit", int, 0, not_negative,
           help="Bytes per second per transfer, 0 for no limit; set it to leave room on a shared radio link."),
    Option("staging_min_free_bytes", int, 0, not_negative,
           help="Free bytes the staging disk must keep: below it downloads wait (uploads go on); 0 for no floor."),
    Option("retention", str, "keep", choices=("keep", "uploaded"),
           help="keep: staged copies stay; uploaded: a staged copy is removed once every target holds it."),
    Option("unreachable_warn_seconds", float, 30.0, not_negative,
           help="Seconds a target may be unreachable before its diagnostic turns to WARN (a source warns at once)."),
    Option("log_dir", str, "",
           help="Folder of filesync's own rotating log, one file per node; empty: $ROS_HOME/log/filesync."),
    Option("log_max_bytes", int, 1 << 20, positive,
           help="Size in bytes at which each log file (filesync's, and rospy's per-node file) rotates."),
    Option("log_backup_count", int, 3, not_negative,
           help="Rotated log files kept per node."),
    Option("ros_log_max_total_bytes", int, 200 << 20, positive,
           help="Total bytes of ROS's log folder above which the status node removes its oldest files."),
    Option("sources", dict,
           help="The sources by name, each a mapping with its kind and that kind's options (docs/devices/<kind>.md)."),
    Option("targets", dict,
           help="The targets by name, each a mapping with its kind and that kind's options (docs/devices/<kind>.md)."),
    Option("pipelines", list,
           help="Which source goes to which targets: a list of mappings with source, targets and delete_after_upload."),
    Option("ftp_server", dict, {},
           help="The bundled FTP server (the ftp_server node): enabled, host, port, root, users, passive_ports."),
    Option("web", dict, {},
           help="The status page for a browser (the web node): enabled, host, port, token_env/token_file, "
                "allowed_hosts, request_timeout, max_connections."),
]

PIPELINE = [
    Option("source", str,
           help="Name of the source (under sources) whose files this pipeline moves."),
    Option("targets", list,
           help="Names of the targets (under targets) that each receive every file of the source."),
    Option("delete_after_upload", bool, False,
           help="true: remove a file from the source once every target holds a verified copy, and only while the "
                "source still holds those very bytes."),
]

FTP_SERVER = [
    Option("enabled", bool, False,
           help="true: the ftp_server node serves root over FTP (pyftpdlib)."),
    Option("host", str, "127.0.0.1",
           help="Address the bundled FTP server listens on; 127.0.0.1 keeps it to this computer."),
    Option("port", int, 2121, port_number,
           help="TCP port of the bundled FTP server."),
    Option("root", str, "~/filesync/ftp_root",
           help="Folder the bundled FTP server serves."),
    Option("users", list, [],
           help="Accounts of the bundled FTP server: mappings with name, perm and password (or password_env / "
                "password_file)."),
    Option("passive_ports", list, [],
           help="The range of TCP ports for passive data connections as [first, last], e.g. [60000, 60010] for a "
                "firewall; empty: any free port."),
]

WEB = [
    Option("enabled", bool, True,
           help="true: the web node serves the status page."),
    Option("host", str, "127.0.0.1",
           help="Address the status page listens on; any other than loopback needs a token (token_env or token_file)."),
    Option("port", int, 8088, port_number,
           help="TCP port of the status page."),
    Option("allowed_hosts", list, [], lambda names: None if all(isinstance(n, str) and n for n in names)
           else "expected a list of host names",
           help="More host names a browser may reach the page by (its Host header), e.g. [robot.lan]; others get 421."),
    Option("request_timeout", float, REQUEST_TIMEOUT, positive,
           help="Seconds a connection has to send each whole request (a live event stream is not cut)."),
    Option("max_connections", int, MAX_CONNECTIONS, positive,
           help="Connections served at once; more are answered 503 (a browser tab holds one or two)."),
] + secret_options("token", "the token that lets a browser Retry and Forget (given once as ?token=...)")

FTP_USER = [
    Option("name", str,
           help="User name of this account of the bundled FTP server."),
    Option("perm", str, "elradfmwMT",
           help="pyftpdlib permission letters of this account (e: change folder, l: list, r: read, a: append, d: "
                "delete, f: rename, m: make folder, w: write, M: chmod, T: set times)."),
] + secret_options(what="this account's password")


@dataclass
class Pipeline:
    """A source and the targets each of its files must reach."""
    source: str
    targets: List[str]
    delete_after_upload: bool = False


@dataclass
class Config:
    """The checked configuration. Device option mappings stay raw here; each device checks its own."""
    staging_dir: str
    database: str
    checkpoint_bytes: int
    scan_interval: float
    poll_interval: float
    lease_seconds: float
    retry_base: float
    retry_cap: float
    max_attempts: int
    bwlimit: int
    sources: Dict[str, dict]
    targets: Dict[str, dict]
    pipelines: List[Pipeline]
    ftp_server: dict = field(default_factory=dict)
    web: dict = field(default_factory=dict)
    staging_min_free_bytes: int = 0
    retention: str = "keep"
    unreachable_warn_seconds: float = 30.0
    log_dir: str = ""
    log_max_bytes: int = 1 << 20
    log_backup_count: int = 3
    ros_log_max_total_bytes: int = 200 << 20

    def pipeline_of(self, source):
        """The pipeline that reads `source`."""
        return next(p for p in self.pipelines if p.source == source)


def default_database():
    """$ROS_HOME/filesync/ledger.db, with ROS's own default of ~/.ros for ROS_HOME."""
    ros_home = os.environ.get("ROS_HOME") or os.path.join(os.path.expanduser("~"), ".ros")
    return os.path.join(ros_home, "filesync", "ledger.db")


def default_log_dir():
    """$ROS_HOME/log/filesync, next to ROS's own node logs (ROS_LOG_DIR wins when set)."""
    if os.environ.get("ROS_LOG_DIR"):
        return os.path.join(os.environ["ROS_LOG_DIR"], "filesync")
    ros_home = os.environ.get("ROS_HOME") or os.path.join(os.path.expanduser("~"), ".ros")
    return os.path.join(ros_home, "log", "filesync")


def _check_devices(mapping, section, device_class):
    for name, options in mapping.items():
        if not isinstance(options, dict):
            raise ConfigError(f"{section}.{name}: expected a mapping with a kind, got {options!r}")
        if not options.get("kind"):
            raise ConfigError(f"{section}.{name}.kind: required but missing")
        if "transfers" in options:  # checked at load, not only when the device is built: a vehicle asked for 2
            device_class(options["kind"], f"{section}.{name}").transfers_option().parse(
                options["transfers"], f"{section}.{name}.transfers")


def _check_web_token(web):
    """An empty token file (or a set but empty variable) is a mistake, not a wish for a read-only page: one line
    naming the key now, before the web node starts without a token (on another address it could not start at all)."""
    variable = web["token_env"]
    if variable:  # unset, it is the web node's to report: another process (a command-line tool) may lack it
        if variable in os.environ and not os.environ[variable].strip():
            raise ConfigError(f"web.token_env: environment variable {variable} is empty")
    elif web["token_file"] and not resolve_secret(web, "web", "token").strip():
        raise ConfigError(f"web.token_file: {expand_path(web['token_file'])} is empty (its first line is the token)")


def load_config(raw) -> Config:
    """Check a configuration mapping and return a Config. Raises ConfigError naming the first bad key."""
    values = parse_options(TOP_LEVEL, raw, "")
    _check_devices(values["sources"], "sources", source_class)
    _check_devices(values["targets"], "targets", target_class)
    pipelines = []
    seen_sources = set()
    for index, entry in enumerate(values["pipelines"]):
        key = f"pipelines[{index}]"
        pipeline = Pipeline(**parse_options(PIPELINE, entry, key))
        if pipeline.source not in values["sources"]:
            raise ConfigError(f"{key}.source: no source named {pipeline.source!r} under sources")
        if pipeline.source in seen_sources:
            raise ConfigError(f"{key}.source: {pipeline.source!r} is already read by another pipeline")
        seen_sources.add(pipeline.source)
        if not pipeline.targets:
            raise ConfigError(f"{key}.targets: needs at least one target")
        for target in pipeline.targets:
            if target not in values["targets"]:
                raise ConfigError(f"{key}.targets: no target named {target!r} under targets")
        if pipeline.delete_after_upload:
            kind = values["sources"][pipeline.source]["kind"]
            if not source_class(kind, f"sources.{pipeline.source}").deletes(values["sources"][pipeline.source]):
                raise ConfigError(f"{key}.delete_after_upload: source {pipeline.source!r} ({kind}) cannot delete "
                                  "files")
        pipelines.append(pipeline)
    server = parse_options(FTP_SERVER, values["ftp_server"], "ftp_server")
    for index, user in enumerate(server["users"]):
        parse_options(FTP_USER, user, f"ftp_server.users[{index}]")
    if server["enabled"] and not server["users"]:
        raise ConfigError("ftp_server.users: an enabled server needs at least one user")
    values["ftp_server"] = server
    web = parse_options(WEB, values["web"], "web")
    if not is_loopback(web["host"]) and not any(web[key] for key in ("token", "token_env", "token_file")):
        raise ConfigError(f"web.host: serving on {web['host']} needs a token (web.token_env or web.token_file); "
                          "without one the page is served on 127.0.0.1 only")
    if web["enabled"]:
        _check_web_token(web)
    values["web"] = web
    values["staging_dir"] = expand_path(values["staging_dir"])
    values["database"] = expand_path(values["database"]) if values["database"] else default_database()
    values["log_dir"] = expand_path(values["log_dir"]) if values["log_dir"] else default_log_dir()
    values["pipelines"] = pipelines
    return Config(**values)


def load_config_file(path) -> Config:
    """Read a YAML file and check it. A YAML syntax error is a ConfigError naming the file and line."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML: {getattr(error, 'problem', error)}") from None
    return load_config(raw)
