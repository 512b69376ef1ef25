"""Print the failed and errored cases of a rostest from its result file, so that they are the last thing a run prints.

rostest prints a failure's traceback amid the test's log and ends with a summary of counts only; CI shows the end of
the output. Usage (the Makefile's test-ros, after a rostest failed): rostest_failures.py TEST_NAME [...]
"""
import os
import sys
import xml.etree.ElementTree as ElementTree


def results_dir():
    """Where rostest writes its result files: $ROS_TEST_RESULTS_DIR, else $ROS_HOME/test_results, else ~/.ros."""
    if os.environ.get("ROS_TEST_RESULTS_DIR"):
        return os.environ["ROS_TEST_RESULTS_DIR"]
    return os.path.join(os.environ.get("ROS_HOME", os.path.expanduser("~/.ros")), "test_results")


def failures(path):
    """[(case name, kind, text)] for each failed or errored test case in the result file at `path`."""
    found = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        for kind in ("failure", "error"):
            for element in case.findall(kind):
                text = (element.text or element.get("message") or "").strip()
                found.append((case.get("name"), kind, text))
    return found


def main(names):
    """Print each named test's failures; 0 always, as this only reports."""
    for name in names:
        path = os.path.join(results_dir(), "filesync", f"rosunit-{name}.xml")
        if not os.path.exists(path):
            print(f"rostest {name}: no result file at {path} (the test did not finish: a crash or its time-limit)")
            continue
        for case, kind, text in failures(path):
            print(f"===== rostest {name}: {case}: {kind}\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
