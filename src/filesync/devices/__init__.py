"""Devices: one module per kind of source or target, each behind the interfaces of filesync.devices.base.

Modules are imported only when configured, so a device's optional library (mavsdk, pyudev) is needed only by its users.
"""
import importlib

from filesync.errors import ConfigError

SOURCE_KINDS = {
    "folder": "filesync.devices.folder:FolderSource",
    "ftp": "filesync.devices.ftp.source:FtpSource",
    "drive": "filesync.devices.drive:DriveSource",
    "mavlink": "filesync.devices.vehicle.mavlink:MavlinkSource",
    "mavros": "filesync.devices.vehicle.mavros:MavrosSource",
    "http": "filesync.devices.http_source:HttpSource",
    "sftp": "filesync.devices.sftp:SftpSource",
}
TARGET_KINDS = {
    "ftp": "filesync.devices.ftp.target:FtpTarget",
    "folder": "filesync.devices.folder:FolderTarget",
    "drive": "filesync.devices.drive:DriveTarget",
    "flight_review": "filesync.devices.http:FlightReviewTarget",
    "http": "filesync.devices.http:HttpTarget",
    "s3": "filesync.devices.s3.target:S3Target",
    "mavlink": "filesync.devices.vehicle.mavlink:MavlinkTarget",
    "sftp": "filesync.devices.sftp:SftpTarget",
    "mavros": "filesync.devices.vehicle.mavros:MavrosTarget",
}


def _device_class(kinds, kind, key):
    if kind not in kinds:
        raise ConfigError(f"{key}.kind: unknown kind {kind!r} (known: {', '.join(sorted(kinds))})")
    module_name, class_name = kinds[kind].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def source_class(kind, key):
    """The class of a source kind (its capabilities are class attributes); ConfigError naming `key` if unknown."""
    return _device_class(SOURCE_KINDS, kind, key)


def target_class(kind, key):
    """The class of a target kind; ConfigError naming `key` if unknown."""
    return _device_class(TARGET_KINDS, kind, key)


def create_source(name, options, context=None):
    """Build the source `name` from its config mapping (which holds `kind`)."""
    key = f"sources.{name}"
    return _device_class(SOURCE_KINDS, options.get("kind"), key)(name, options, key, context)


def create_target(name, options, context=None):
    """Build the target `name` from its config mapping (which holds `kind`)."""
    key = f"targets.{name}"
    return _device_class(TARGET_KINDS, options.get("kind"), key)(name, options, key, context)
