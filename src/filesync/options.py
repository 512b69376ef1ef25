"""Validation of configuration mappings, so that every bad value is reported as one line naming its key.

Hand-written because the schema is small and the error text ("sources.inbox.port: expected an integer, got 'abc'")
is the point; jsonschema's messages name JSON pointers and would add a dependency for forty lines.
"""
import os
import string

from filesync.errors import ConfigError

REQUIRED = object()

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
               dict: "a mapping"}


class Option:
    """One configuration key: its type, default (REQUIRED if none), an optional check returning an error text, and
    its help: what it means, its unit and what to set it to (docs/devices/<kind>.md is generated from it)."""

    def __init__(self, name, kind, default=REQUIRED, check=None, choices=None, secret=False, help=""):
        self.name = name
        self.kind = kind
        self.default = default
        self.check = check
        self.choices = choices
        self.secret = secret  # its value never appears in a message
        self.help = help

    def parse(self, raw, key):
        """The checked value of `raw` (None: the default); raises ConfigError naming `key`."""
        if raw is None:
            if self.default is REQUIRED:
                raise ConfigError(f"{key}: required but missing")
            return self.default
        value = _coerce(raw, self.kind, key, self.secret)
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, self.choices))}")
        if self.check is not None:
            problem = self.check(value)
            if problem:
                raise ConfigError(f"{key}: {problem}")
        return value


def _coerce(raw, kind, key, secret=False):
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    # a secret's value is never echoed: YAML reads `password: 20240501` as a number, and the message must not show it
    shown = f"{type(raw).__name__} (value not shown: it is a secret; quote it in YAML)" if secret else repr(raw)
    if kind is int and isinstance(raw, bool):
        raise ConfigError(f"{key}: expected {_TYPE_NAMES[kind]}, got {shown}")
    if not isinstance(raw, kind):
        raise ConfigError(f"{key}: expected {_TYPE_NAMES.get(kind, kind.__name__)}, got {shown}")
    return raw


def parse_options(options, raw, prefix, ignore=()):
    """Check the mapping `raw` against the Option list; return a dict of values. `prefix` is the key path for messages."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {raw!r}")
    join = (lambda name: f"{prefix}.{name}") if prefix else (lambda name: name)
    known = {option.name for option in options} | set(ignore)
    for name in raw:
        if name not in known:
            raise ConfigError(f"{join(name)}: unknown key (known: {', '.join(sorted(known))})")
    return {option.name: option.parse(raw.get(option.name), join(option.name)) for option in options}


def positive(value):
    """Check: the number is above zero."""
    return None if value > 0 else f"must be above 0, got {value}"


def not_negative(value):
    """Check: the number is zero or more."""
    return None if value >= 0 else f"must be 0 or more, got {value}"


def port_number(value):
    """Check: a TCP or UDP port."""
    return None if 0 < value < 65536 else f"must be a port from 1 to 65535, got {value}"


def expand_path(path):
    """Expand ~ and environment variables in a configured path."""
    return os.path.abspath(os.path.expanduser(os.path.expandvars(path)))


def resolve_secret(values, key, name="password"):
    """Read a secret given as `<name>`, `<name>_env` (an environment variable) or `<name>_file` (a file's first line).

    Resolved when a connection is made, so the secret never sits in params, logs or the ledger longer than needed.
    Raises ConfigError naming the key when the variable or file is missing.
    """
    if values.get(f"{name}_env"):
        variable = values[f"{name}_env"]
        if variable not in os.environ:
            raise ConfigError(f"{key}.{name}_env: environment variable {variable} is not set")
        return os.environ[variable]
    if values.get(f"{name}_file"):
        path = expand_path(values[f"{name}_file"])
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.readline().rstrip("\r\n")
        except OSError as error:
            raise ConfigError(f"{key}.{name}_file: cannot read {path}: {error.strerror}") from None
    return values.get(name) or ""


def secret_options(name="password", what="the password"):
    """The three ways to give a secret, as Options; `what` names the secret in their help."""
    return [Option(name, str, "", secret=True,
                   help=f"{what[0].upper()}{what[1:]}, written in the configuration itself (discouraged: prefer "
                        f"{name}_env or {name}_file). Never shown in a message."),
            Option(f"{name}_env", str, "", help=f"The name of an environment variable holding {what}; read when a "
                                                  "connection is made, never logged."),
            Option(f"{name}_file", str, "", help=f"A file whose first line is {what}; read when a connection is "
                                                   "made, never logged.")]


def template_check(allowed, required=None, why=""):
    """An Option check for a str.format template: only the placeholders in `allowed`, and `required` among them
    (`why` says what goes wrong without it)."""
    def check(value):
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as error:
            return f"not a valid template ({error})"
        unknown = sorted(field for field in fields if field not in allowed)
        if unknown:
            return f"unknown placeholder {{{unknown[0]}}} (known: {', '.join('{%s}' % n for n in allowed)})"
        if required is not None and required not in fields:
            return f"must hold {{{required}}}, {why}"
        return None
    return check
