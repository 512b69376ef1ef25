"""Names that would land outside staging or the target root are refused."""
import pytest

from filesync.errors import UnsafePath
from filesync.paths import check_relative


@pytest.mark.parametrize("name", [
    "", "/etc/passwd", "../up.bin", "a/../../b", "a//b", "./a", "a/./b", "nul\x00byte", "line\nbreak",
    "back\\slash", "C:/x", "c:", "x" * 256, "/".join(["d" * 200] * 6), "log.ulg.part"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(UnsafePath):
        check_relative(name)


@pytest.mark.parametrize("name", ["a.bin", "a:b.txt", "2024-05-01/12_00_00.ulg", "sess001/log001.ulg", "ü/日本.ulg", "x" * 255])
def test_ordinary_names_pass(name):
    assert check_relative(name) == name


def test_exactly_the_ascii_control_characters_are_refused():
    refused = {code for code in range(0x3000) if _refused(f"a{chr(code)}b")}
    assert refused == set(range(32)) | {127, ord("\\")}


def _refused(name):
    try:
        check_relative(name)
    except UnsafePath:
        return True
    return False
