"""docs/guarantees.md names, under each rule of the contract, the tests that show it: every rule names at least one, and
every test it names exists (a renamed or deleted test breaks the page, not silently the promise)."""
import re

from support.doc_checks import TEST_REFERENCE, missing_tests, read

PAGE = "docs/guarantees.md"


def test_every_rule_names_tests_and_every_named_test_exists():
    text = read(PAGE)
    rules = re.split(r"^## ", text, flags=re.M)[1:]
    assert len(rules) >= 10, "the contract's rules are the page's ## sections"
    for rule in rules:
        title = rule.splitlines()[0]
        assert "Shown by:" in rule and TEST_REFERENCE.search(rule.split("Shown by:", 1)[1]), \
            f"{PAGE}: the rule {title!r} names no test"
    assert missing_tests(text) == []


def test_a_missing_test_is_found():
    """The check itself: a reference to a test that is not there, or to a file that is not there, is reported."""
    assert missing_tests("`test/test_paths.py::test_ordinary_names_pass`") == []
    assert missing_tests("`test/test_paths.py::test_no_such_test`") == ["test/test_paths.py::test_no_such_test"]
    assert missing_tests("`test/test_nothing_here.py::test_x`") == ["test/test_nothing_here.py::test_x"]


def test_the_readmes_promises_are_on_the_page():
    """The README's one-line contract points at rules the page has."""
    readme, page = read("README.md"), read(PAGE)
    for rule in ("Nothing is lost, nothing starts over", "Verified through the target",
                 "Published once, never overwritten", "Removed only while it is the same file"):
        assert f"## {rule}\n" in page, rule
    assert "(docs/guarantees.md)" in readme
