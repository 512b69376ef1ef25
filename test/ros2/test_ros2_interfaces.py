"""filesync_interfaces is generated from msg/ and srv/ (ros2/filesync_interfaces/CMakeLists.txt): every type has the
fields of its ROS 1 definition, with the same types; the one change is the package prefix of filesync's own types."""
import glob
import importlib
import os
import re

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
# ROS 1 built-in type -> how rosidl names it in get_fields_and_field_types()
BUILTIN = {"bool": "boolean", "float64": "double", "float32": "float", "uint8": "uint8", "uint32": "uint32",
           "uint64": "uint64", "int32": "int32", "int64": "int64", "string": "string", "byte": "octet"}


def ros1_fields(text):
    """[(name, ROS 2 type name)] of a ROS 1 definition's fields (constants have none here)."""
    fields = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        kind, name = line.split()[:2]
        array = kind.endswith("[]")
        kind = kind[:-2] if array else kind
        if kind.startswith("filesync/"):
            kind = "filesync_interfaces/" + kind.split("/", 1)[1]
        elif kind == "std_msgs/Header":
            kind = "std_msgs/Header"
        else:
            kind = BUILTIN[kind]
        fields.append((name, f"sequence<{kind}>" if array else kind))
    return fields


def definitions():
    for path in sorted(glob.glob(os.path.join(ROOT, "msg", "*.msg")) + glob.glob(os.path.join(ROOT, "srv", "*.srv"))):
        yield os.path.relpath(path, ROOT)


@pytest.mark.parametrize("relative", list(definitions()))
def test_each_interface_has_the_fields_of_its_ros1_definition(relative):
    with open(os.path.join(ROOT, relative), encoding="utf-8") as handle:
        text = handle.read()
    folder, name = os.path.split(os.path.splitext(relative)[0])
    module = importlib.import_module(f"filesync_interfaces.{folder}")
    if folder == "msg":
        parts = [(getattr(module, name), text)]
    else:
        request, reply = re.split(r"^---$", text, flags=re.M)
        parts = [(getattr(module, name).Request, request), (getattr(module, name).Response, reply)]
    for cls, part in parts:
        assert list(cls.get_fields_and_field_types().items()) == ros1_fields(part), cls
