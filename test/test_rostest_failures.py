"""The Makefile's report of a failed rostest (test/support/rostest_failures.py) names each failed case and its reason."""
from support import rostest_failures

RESULT = """<?xml version="1.0" encoding="utf-8"?>
<testsuite errors="1" failures="1" name="unittest.suite.TestSuite" tests="3" time="1.0">
<testcase classname="__main__.T" name="test_passes" time="0.1" />
<testcase classname="__main__.T" name="test_fails" time="0.1"><failure type="AssertionError">Traceback
AssertionError: 1 != 2</failure></testcase>
<testcase classname="__main__.T" name="test_errs" time="0.1"><error type="TimeoutError">Traceback
TimeoutError: no answer</error></testcase>
</testsuite>"""


def test_failed_and_errored_cases_are_printed_with_their_tracebacks(tmp_path, monkeypatch, capsys):
    (tmp_path / "filesync").mkdir()
    (tmp_path / "filesync" / "rosunit-mavros_source.xml").write_text(RESULT)
    monkeypatch.setenv("ROS_TEST_RESULTS_DIR", str(tmp_path))
    assert rostest_failures.main(["mavros_source", "nodes"]) == 0
    out = capsys.readouterr().out
    assert "rostest mavros_source: test_fails: failure\nTraceback\nAssertionError: 1 != 2" in out
    assert "rostest mavros_source: test_errs: error\nTraceback\nTimeoutError: no answer" in out
    assert "test_passes" not in out
    assert "rostest nodes: no result file" in out
