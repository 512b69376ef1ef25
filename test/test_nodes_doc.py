"""docs/nodes.md says what the code and the launch files do: every node of both launch files has its section, every
topic, service and parameter the adapters create is in its node's table with its type, none is there that the code
does not create, the ROS 2 differences and QoS are the code's, and the launch arguments are the launch files'.

The code's side is read by support.ros_graph from the adapters' source (see there why not from a running graph)."""
import ast
import re
import xml.etree.ElementTree as ElementTree

import pytest

from support import ros_graph
from support.doc_checks import read

PAGE = "docs/nodes.md"
ROW = re.compile(r"^\| (publishes|subscribes|serves|calls|parameter)(?: \((\w+) only\))? \| `([^`]+)` \| "
                 r"(?:`([^`]*)`)? *\|", re.M)
DIFFERENCE = re.compile(r"^\| ROS (1|2) only \| ([^|]+) \| (publishes|subscribes|serves|calls|parameter) \| "
                        r"`([^`]+)` \| (?:`([^`]*)`)? *\|", re.M)
ALIASES = {"filesync": ros_graph.TOOL, "rqt": ros_graph.RQT, "status_window": ros_graph.RQT}
NOT_OURS = {"diagnostic_aggregator"}  # Debian's node, in the launch file; its graph is not filesync's code


def sections(text):
    """{heading: body} of the page's ## sections."""
    parts = re.split(r"^## (.*)\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def users_of_heading(heading):
    """The processes a section is about: the node names in backticks in its heading."""
    return {ALIASES.get(name, name) for name in re.findall(r"`([^`]+)`", heading)}


def documented_endpoints(text):
    """The Endpoints of the page's node sections."""
    found = set()
    for heading, body in sections(text).items():
        users = users_of_heading(heading)
        for direction, only, name, kind in ROW.findall(body):
            for user in users if not only else [only]:
                assert not only or only in users, f"{heading}: {only!r} is not a node of this section"
                found.add(ros_graph.Endpoint(user, direction, name, "" if direction == "parameter" else kind))
    return found


def code_endpoints(generation):
    return {endpoint._replace(type="") if endpoint.direction == "parameter" else endpoint
            for endpoint in ros_graph.endpoints(generation)}


def launch_nodes():
    """{node name: package} of launch/sync.launch, and the node names of launch/sync.launch.py."""
    root = ElementTree.fromstring(read("launch/sync.launch"))
    ros1 = {node.get("name"): node.get("pkg") for node in root.iter("node")}
    tree = ast.parse(read("launch/sync.launch.py"))
    pairs = next(node for node in ast.walk(tree) if isinstance(node, ast.Assign) and
                 getattr(node.targets[0], "id", "") == "nodes")
    ros2 = {name for name, _ in ast.literal_eval(pairs.value)}
    return ros1, ros2


def normalized(endpoints):
    """Endpoints with ROS 1's and ROS 2's type names made one: filesync_interfaces/msg/X and filesync/X are filesync/X,
    pkg/srv/X and pkg/X are pkg/X."""
    result = set()
    for endpoint in endpoints:
        parts = endpoint.type.split("/")
        if len(parts) == 3:
            parts = [parts[0], parts[2]]
        if parts[0] == "filesync_interfaces":
            parts[0] = "filesync"
        result.add(endpoint._replace(type="/".join(parts)))
    return result


def test_every_node_of_both_launch_files_has_its_section_and_the_graph_reader_knows_them():
    ros1, ros2 = launch_nodes()
    documented = set().union(*(users_of_heading(heading) for heading in sections(read(PAGE))))
    assert set(ros1) <= documented and ros2 <= documented, (set(ros1) | ros2) - documented
    ours = {name for name, package in ros1.items() if package == "filesync"}
    assert set(ros1) - ours == NOT_OURS
    assert set(ros_graph.LAUNCHED) == ours == ros2, "ros_graph.LAUNCHED is the launch files' nodes"


def test_the_launch_arguments_are_the_launch_files():
    root = ElementTree.fromstring(read("launch/sync.launch"))
    ros1 = {arg.get("name") for arg in root.iter("arg")}
    tree = ast.parse(read("launch/sync.launch.py"))
    ros2 = {ast.literal_eval(call.args[0]) for call in ast.walk(tree) if isinstance(call, ast.Call) and
            getattr(call.func, "id", "") == "DeclareLaunchArgument"}
    rows = re.findall(r"^\| `(\w+)` \| (both|ROS 1|ROS 2) \|", sections(read(PAGE))["Launch arguments"], re.M)
    assert {name for name, where in rows if where in ("both", "ROS 1")} == ros1
    assert {name for name, where in rows if where in ("both", "ROS 2")} == ros2


def test_every_topic_service_and_parameter_of_ros_1_is_on_the_page_and_no_other():
    documented, code = documented_endpoints(read(PAGE)), code_endpoints(1)
    assert sorted(code - documented) == [], "created by the code, missing from docs/nodes.md"
    assert sorted(documented - code) == [], "on docs/nodes.md, not created by the code"


def test_what_differs_on_ros_2_is_what_the_code_does():
    ros1, ros2 = normalized(code_endpoints(1)), normalized(code_endpoints(2))
    every = set(ros_graph.LAUNCHED)
    listed = {"1": set(), "2": set()}
    for side, who, direction, name, kind in DIFFERENCE.findall(read(PAGE)):
        users = every if who.strip() == "every node" else {ALIASES.get(u.strip(), u.strip()) for u in who.split(",")}
        listed[side] |= {ros_graph.Endpoint(user, direction, name, kind) for user in users}
    assert sorted(listed["1"] ^ (ros1 - ros2)) == [], "ROS 1 only: the page's table against the code"
    assert sorted(listed["2"] ^ (ros2 - ros1)) == [], "ROS 2 only: the page's table against the code"


def test_the_qos_table_is_the_code():
    reader = ros_graph.Reader(2)
    messages = reader.module("filesync.ros2.messages")
    used = {}
    for path in reader.files():
        module = reader.module(path[len(ros_graph.SRC) + 1:-3].replace("/", "."))
        for call in ast.walk(module.tree):
            if isinstance(call, ast.Call) and ros_graph.call_name(call) in ("create_publisher", "create_subscription"):
                function = next((p for p in module.ancestors(call) if isinstance(p, ast.FunctionDef)), None)
                topic = reader.evaluate(module, call.args[1], {}, function)[0]
                name = call.args[-1].id  # a profile of the module's own (MAVROS's /state) or of messages.py
                used.setdefault(topic, set()).add((module.assigned.get(name) or messages.assigned[name], name))
    profiles = {}
    for topic, names in used.items():
        assert len(names) == 1, f"{topic}: publishers and subscribers with different QoS {names}"
        keywords = {k.arg: k.value for k in names.pop()[0].keywords}
        profiles[topic] = (keywords["reliability"].attr.lower(), keywords["durability"].attr.lower().replace("_", " "),
                           str(keywords["depth"].value))
    rows = re.findall(r"^\| `(/[\w/]+)` \| (\w+) \| ([\w ]+) \| (\d+) \|", sections(read(PAGE))["On ROS 2"], re.M)
    assert {topic: (reliability, durability, depth) for topic, reliability, durability, depth in rows} == profiles


def test_the_check_finds_a_missing_and_an_invented_row():
    """The check itself: a page without a row the code creates, or with one it does not, is caught."""
    text = read(PAGE)
    documented, code = documented_endpoints(text), code_endpoints(1)
    without = text.replace("| serves | `/filesync/lock/release` | `filesync/Release` | give it back |\n", "")
    assert code - documented_endpoints(without) == {ros_graph.Endpoint("lock", "serves", "/filesync/lock/release",
                                                                       "filesync/Release")}
    invented = text.replace("| serves | `/filesync/lock/release`", "| serves | `/filesync/lock/renew`")
    assert documented_endpoints(invented) - code == {ros_graph.Endpoint("lock", "serves", "/filesync/lock/renew",
                                                                        "filesync/Release")}
    assert documented == code


def test_a_call_whose_name_cannot_be_read_is_an_error(tmp_path, monkeypatch):
    """A new endpoint whose name the reader cannot evaluate fails the test instead of going unchecked."""
    source = tmp_path / "filesync" / "ros"
    source.mkdir(parents=True)
    (source / "odd_node.py").write_text("import rospy\n\ndef main(topic_of_the_day):\n"
                                        "    rospy.Publisher(topic_of_the_day.upper(), int)\n")
    monkeypatch.setattr(ros_graph, "SRC", str(tmp_path))
    monkeypatch.setattr(ros_graph, "ROS1_USERS", {("filesync/ros/odd_node.py", "main"): ("ledger",)})
    with pytest.raises(ros_graph.Unresolved, match="odd_node.py:4"):
        ros_graph.endpoints(1)
