"""`filesync --help` and each command's help fit one screen (under 24 lines of 100 columns), each command has a
description of its own, and they say what the README says."""
import re

import pytest

from filesync import cli
from filesync.ros2 import supervisor
from support.doc_checks import missing_tests, read

SCREEN_LINES, SCREEN_COLUMNS = 24, 100


def commands():
    """{name: subparser} of the tool."""
    return cli.parser()._subparsers._group_actions[0].choices


def screens(monkeypatch):
    """{command line: its help text} at 100 columns, the tool's and filesync-ros2's."""
    monkeypatch.setenv("COLUMNS", str(SCREEN_COLUMNS))  # argparse wraps to the terminal's width
    texts = {"filesync --help": cli.parser().format_help()}
    texts.update({f"filesync {name} --help": command.format_help() for name, command in commands().items()})
    return texts


def supervisor_help(capsys, argv):
    with pytest.raises(SystemExit):
        supervisor.main(argv)
    return capsys.readouterr().out


def test_each_help_fits_one_screen(monkeypatch, capsys):
    texts = screens(monkeypatch)
    texts["filesync-ros2 --help"] = supervisor_help(capsys, ["--help"])
    texts["filesync-ros2 run --help"] = supervisor_help(capsys, ["run", "--help"])
    assert set(texts) >= {f"filesync {name} --help" for name in ("status", "ls", "retry", "forget", "audit")}
    for command, text in texts.items():
        lines = text.rstrip("\n").splitlines()
        assert len(lines) < SCREEN_LINES, f"{command}: {len(lines)} lines"
        assert max(map(len, lines)) <= SCREEN_COLUMNS, f"{command}: a line over {SCREEN_COLUMNS} columns"


def test_each_command_has_a_description_of_its_own(capsys):
    for name, command in commands().items():
        summary = next(action.help for action in cli.parser()._subparsers._group_actions[0]._choices_actions
                       if action.dest == name)
        assert command.description and len(command.description) > len(summary), name
    assert "Start filesync's ROS 2 nodes" in supervisor_help(capsys, ["run", "--help"])


def test_the_help_says_what_the_readme_says(monkeypatch):
    readme, texts = read("README.md"), screens(monkeypatch)
    main = " ".join(texts["filesync --help"].split())
    # the promises of the README's first paragraph, and how the tool is started on each generation
    flat = " ".join(readme.split())
    for readme_says, help_says in (("every copy is verified on its target", "verifies each copy on its target"),
                                   ("nothing published is overwritten", "never overwrites"),
                                   ("removed only once every target holds a verified copy",
                                    "removes a source file only once every target holds a verified copy")):
        assert readme_says in flat and help_says in main, (readme_says, help_says)
    for start in ("rosrun filesync filesync", "ros2 run filesync filesync"):
        assert start in readme and start in main, start
    # the README's "Watch it" commands: each is one of the tool's, with the arguments the README gives it
    watch = readme.split("## Watch it", 1)[1].split("\n## ", 1)[0]
    used = dict(re.findall(r"(?:`|filesync )filesync ([a-z_]+)(?: ([A-Za-z]+))?", watch))
    assert set(used) == set(commands()), used
    assert used["ls"] in cli.FILE_STATES and used["retry"] == used["forget"] == "ID" and used["audit"] == "TARGET"
    assert "live" in watch and texts["filesync status --help"].count("live view") == 1
    assert "still hold what was delivered" in watch and "still holds every version the ledger says it delivered" \
        in " ".join(texts["filesync audit --help"].split())
    for name in ("retry", "forget", "audit"):
        positional = [action.dest for action in commands()[name]._actions if not action.option_strings]
        assert positional == [used[name].lower()], name
    # the exit statuses the help states are the ones the tool's tests see
    assert "0 done, 1 something did not answer or refused, 2 bad usage" in main
    assert missing_tests("`test/test_cli.py::test_bad_usage_exits_2` "
                         "`test/test_cli.py::test_no_master_is_one_clear_line_and_no_hang` "
                         "`test/test_audit.py::test_cannot_check_exits_2_with_one_line`") == []
