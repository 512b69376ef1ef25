"""What the tests of the documentation share: reading a page, its fenced blocks and links, and finding a named test."""
import ast
import os
import re

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
TEST_REFERENCE = re.compile(r"`(test/[\w/]+\.py)::(\w+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def read(relative_path):
    """The text of a file of the repository."""
    with open(os.path.join(ROOT, relative_path), encoding="utf-8") as handle:
        return handle.read()


def section(text, heading):
    """The text under the markdown heading `heading` (e.g. "## Watch it") up to the next heading of its level or
    higher."""
    level = len(heading) - len(heading.lstrip("#"))
    after = text.split(heading + "\n", 1)[1]
    end = re.search(r"^#{1,%d} " % level, after, re.M)
    return after[:end.start()] if end else after


def fenced_blocks(text, language):
    """The bodies of the ```language fenced blocks of `text`, in order."""
    return re.findall(r"^```%s\n(.*?)^```" % re.escape(language), text, re.S | re.M)


def relative_links(text):
    """The link targets of `text` that are paths in the repository (no scheme, no anchor-only links)."""
    return [target.split("#")[0] for target in LINK.findall(text)
            if "://" not in target and not target.startswith(("#", "mailto:"))]


def test_functions(relative_path):
    """The names of every function and method defined in a test file (test classes' methods included)."""
    tree = ast.parse(read(relative_path))
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def missing_tests(text):
    """The `test/FILE.py::NAME` references of `text` whose file or test function does not exist."""
    missing = []
    for path, name in TEST_REFERENCE.findall(text):
        if not os.path.isfile(os.path.join(ROOT, path)) or name not in test_functions(path):
            missing.append(f"{path}::{name}")
    return missing
