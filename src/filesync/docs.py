"""docs/devices/<kind>.md, one page per device kind: the options tables are generated from the kinds' Option
declarations (name, type, default, secret or not, help), between two marker lines; the prose around them is written by
hand and kept as it is. `python -m filesync.docs [FOLDER]` (`make docs`) rewrites the tables; `--check` only says which
pages differ (test/test_device_docs.py runs it, so a page cannot drift from the code).
"""
import argparse
import json
import os
import sys

from filesync.devices import SOURCE_KINDS, TARGET_KINDS, source_class, target_class
from filesync.options import REQUIRED

BEGIN = "<!-- options: generated from the Option declarations by `make docs`; edit the code, not this table -->"
END = "<!-- end of the generated options -->"
DEFAULT_FOLDER = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "devices")
TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "true/false", list: "list", dict: "mapping"}


def device_kinds():
    """Every device kind, sources' and targets' together, sorted."""
    return sorted(set(SOURCE_KINDS) | set(TARGET_KINDS))


def device_roles(kind):
    """[(role, class)] of `kind`: ("source", its class) and ("target", its class), where it is one."""
    roles = []
    if kind in SOURCE_KINDS:
        roles.append(("source", source_class(kind, kind)))
    if kind in TARGET_KINDS:
        roles.append(("target", target_class(kind, kind)))
    return roles


def device_options(device_class):
    """Every Option a device of `device_class` takes, in the order a page lists them."""
    return device_class.OPTIONS + device_class.ENGINE_OPTIONS + [device_class.transfers_option()]


def _default_text(option):
    if option.default is REQUIRED:
        return "required"
    if option.default is None:
        return "unset"
    return f"`{json.dumps(option.default, ensure_ascii=False)}`"


def _cell(text):
    """Text for one table cell: a | would end it, and <name> would be taken for an HTML tag."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def options_table(options):
    """A Markdown table of `options`: name, type, default, secret, meaning (the help, then the choices)."""
    rows = ["| option | type | default | secret | meaning |", "| --- | --- | --- | --- | --- |"]
    for option in options:
        meaning = option.help
        if option.choices is not None:
            meaning += f" One of: {', '.join(f'`{choice}`' for choice in option.choices)}."
        rows.append(f"| `{option.name}` | {TYPE_NAMES.get(option.kind, option.kind.__name__)} | "
                    f"{_cell(_default_text(option))} | {'yes' if option.secret else 'no'} | {_cell(meaning)} |")
    return "\n".join(rows)


def generated_section(kind):
    """The generated part of `kind`'s page, marker lines included."""
    parts = [BEGIN]
    for role, device_class in device_roles(kind):
        parts.append(f"### As a {role} (`{device_class.__module__}.{device_class.__name__}`)\n\n"
                     f"{options_table(device_options(device_class))}")
    parts.append(END)
    return "\n\n".join(parts)


def page_text(kind, current):
    """`kind`'s page with its generated part replaced in `current` (the page as it is); ValueError without markers."""
    start, end = current.find(BEGIN), current.find(END)
    if start < 0 or end < start:
        raise ValueError(f"docs/devices/{kind}.md: the marker lines are missing ({BEGIN!r} ... {END!r})")
    return current[:start] + generated_section(kind) + current[end + len(END):]


def stale_pages(folder):
    """{path: the text it should have} of every page whose generated part differs from the code's (a missing page:
    a skeleton to fill in)."""
    stale = {}
    for kind in device_kinds():
        path = os.path.join(folder, f"{kind}.md")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                current = handle.read()
        else:
            current = f"# `{kind}`\n\n## Options\n\n{BEGIN}\n{END}\n"
        wanted = page_text(kind, current)
        if wanted != current:
            stale[path] = wanted
    return stale


def main(argv=None):
    """Rewrite the pages' generated parts (or, with --check, list the pages that differ and exit 1)."""
    parser = argparse.ArgumentParser(prog="python -m filesync.docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default=os.path.normpath(DEFAULT_FOLDER),
                        help="the folder of the device pages (default: docs/devices of this checkout)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page differs")
    arguments = parser.parse_args(argv)
    stale = stale_pages(arguments.folder)
    for path, text in sorted(stale.items()):
        if arguments.check:
            print(f"{path}: differs from the option declarations; run `make docs`")
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(path + ".tmp", path)
        print(f"{path}: written")
    return 1 if stale and arguments.check else 0


if __name__ == "__main__":
    sys.exit(main())
