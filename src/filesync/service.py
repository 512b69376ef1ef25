"""The systemd unit for filesync: rendered from systemd/filesync.service.in for one configuration and workspace.

Run as `python -m filesync.service --config FILE --workspace DIR --output FILE` (what `make install-service` does).
"""
import argparse
import getpass
import os
import pwd
import sys
from urllib.parse import urlparse

from filesync.config import load_config_file

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "..", "..", "systemd", "filesync.service.in")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
NETWORK_LINES = "After=network-online.target\nWants=network-online.target"


def _host(options):
    for key in ("server", "url"):  # HTTP targets name a URL; FTP ones a host
        if options.get(key):
            return urlparse(options[key].split("{", 1)[0]).hostname or ""
    return options.get("host", "")


def needs_network(config) -> bool:
    """True when a used source or target lives on another machine, so the unit waits for network-online.target."""
    used = {p.source for p in config.pipelines}
    devices = [config.sources[name] for name in used] + [config.targets[name] for p in config.pipelines
                                                         for name in p.targets]
    return any(_host(options) not in LOCAL_HOSTS for options in devices
               if options.get("kind") in ("ftp", "http", "flight_review"))


def render(config_path, workspace, user, template=TEMPLATE) -> str:
    """The unit text for `config_path` run from the catkin `workspace` as `user`."""
    config = load_config_file(config_path)
    with open(template, encoding="utf-8") as handle:
        text = handle.read()
    values = {"@NETWORK@": NETWORK_LINES if needs_network(config) else "# no target needs the network",
              "@USER@": user, "@HOME@": pwd.getpwnam(user).pw_dir, "@WORKSPACE@": os.path.abspath(workspace),
              "@CONFIG@": os.path.abspath(config_path)}
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def main(argv=None):
    """Write the unit file; exit 2 with one line on a bad configuration."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--user", default=os.environ.get("SUDO_USER") or getpass.getuser())
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    try:
        text = render(args.config, args.workspace, args.user)
    except Exception as error:  # ConfigError, or an unknown user: one line either way
        sys.stderr.write(f"filesync.service: {error}\n")
        return 2
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
