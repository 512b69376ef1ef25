"""The ROS graph filesync's adapters build, read from their source: every topic published or subscribed, service served
or called and parameter read, with its type, and the nodes each belongs to.

test/test_nodes_doc.py checks docs/nodes.md against it. It reads the code rather than running the nodes: a node only
creates its publishers, services and clients once it has a configuration, a ledger, a vehicle, MAVROS, and service
clients never show in the graph a master or DDS reports. So the calls that create them are found in the syntax tree
(rospy.Publisher, Subscriber, Service, ServiceProxy, get_param; rclpy's create_publisher, create_subscription,
create_service, create_client, declare_parameter; filesync's PersistentService and FilesyncNode.client) and their
name and type arguments evaluated: constants, f-strings, module constants followed through imports, parameter defaults,
loops over literal tuples and dicts, and the call sites of the function a name is a parameter of. A call whose name
cannot be evaluated so is an error, not a silent gap: make it evaluable or teach this module.
"""
import ast
import itertools
import os
from collections import namedtuple

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")
Endpoint = namedtuple("Endpoint", "user direction name type")  # type: "pkg/Name" on ROS 1, "pkg/kind/Name" on ROS 2
INTERFACE_KINDS = ("msg", "srv")

# (call's attribute or name, direction, index of the name argument, index of the type argument or None)
ROS1_CALLS = {"Publisher": ("publishes", 0, 1), "Subscriber": ("subscribes", 0, 1), "Service": ("serves", 0, 1),
              "ServiceProxy": ("calls", 0, 1), "PersistentService": ("calls", 0, 1),
              "get_param": ("parameter", 0, None)}
ROS2_CALLS = {"create_publisher": ("publishes", 1, 0), "create_subscription": ("subscribes", 1, 0),
              "create_service": ("serves", 1, 0), "create_client": ("calls", 1, 0), "client": ("calls", 1, 0),
              "declare_parameter": ("parameter", 0, None)}
# Functions whose calls inside are the transport of a call counted where they are called (PersistentService(...),
# FilesyncNode.client(...)): their inner ServiceProxy/create_client has no name of its own.
WRAPPERS = {("filesync/ros/services.py", "PersistentService"), ("filesync/ros2/node.py", "FilesyncNode.client")}
# Parameters a device hands to the ROS layer it calls through: (module, name) -> (device module, its option)
HANDED_IN = {(os.path.join("filesync", folder, "mavros_calls.py"), "namespace"):
             ("filesync.devices.vehicle.mavros", "namespace") for folder in ("ros", "ros2")}
# diagnostic_updater.Updater() publishes /diagnostics (ROS 1); on ROS 2 the status node publishes it itself.
UPDATER = ("publishes", "/diagnostics", ("diagnostic_msgs", "msg", "DiagnosticArray"))

WORKERS = ("finder", "downloader", "uploader")
LAUNCHED = ("ledger", "lock", "ftp_server", "vehicle") + WORKERS + ("status", "web")
TOOL, RQT = "filesync (the tool)", "rqt plugin"
# Which processes run the code at (file under src/, top-level function or class): every file of the adapters that
# creates a graph endpoint must be here, so a new one cannot go undocumented.
ROS1_USERS = {
    ("filesync/ros/ledger_node.py", "main"): ("ledger",),
    ("filesync/ros/lock_node.py", "main"): ("lock",),
    ("filesync/ros/vehicle_node.py", "run"): ("vehicle",),
    ("filesync/ros/vehicle_node.py", "_new_transport"): WORKERS,
    ("filesync/ros/workers_node.py", "run"): WORKERS,
    ("filesync/ros/status_node.py", "StatusNode"): ("status",),
    ("filesync/ros/status_client.py", "StatusClient"): ("web", RQT),
    ("filesync/ros/cli_backend.py", "LedgerClient"): ("web", RQT, TOOL),
    ("filesync/ros/cli_backend.py", "watch_status"): (TOOL,),
    ("filesync/ros/cli_backend.py", "config"): (TOOL,),
    ("filesync/ros/ledger_client.py", "RosLedger"): WORKERS,
    ("filesync/ros/node.py", "start_node"): LAUNCHED,
    ("filesync/ros/node.py", "RosLeaseClient"): WORKERS,
    ("filesync/ros/mavros_calls.py", "MavrosCalls"): WORKERS,  # the mavros source and target's calls
}
ROS2_USERS = {
    ("filesync/ros2/ledger_node.py", "main"): ("ledger",),
    ("filesync/ros2/lock_node.py", "main"): ("lock",),
    ("filesync/ros2/vehicle_node.py", "main"): ("vehicle",),
    ("filesync/ros2/vehicle_node.py", "VehicleServiceLinks"): WORKERS,
    ("filesync/ros2/workers_node.py", "run"): WORKERS,
    ("filesync/ros2/status_node.py", "StatusNode"): ("status",),
    ("filesync/ros2/status_client.py", "StatusClient"): ("web",),
    ("filesync/ros2/cli_backend.py", "_call"): (TOOL,),  # for LedgerClient and config
    ("filesync/ros2/cli_backend.py", "LedgerClient"): (TOOL,),
    ("filesync/ros2/cli_backend.py", "watch_status"): (TOOL,),
    ("filesync/ros2/cli_backend.py", "config"): (TOOL,),
    ("filesync/ros2/ledger_client.py", "RosLedger"): WORKERS + ("web",),
    ("filesync/ros2/node.py", "FilesyncNode"): LAUNCHED,
    ("filesync/ros2/node.py", "RosLeaseClient"): WORKERS,
    ("filesync/ros2/mavros_calls.py", "MavrosCalls"): WORKERS,
}


class Unresolved(Exception):
    """An expression this reader cannot evaluate; args[0] names the variable when one is missing."""


class Interface(namedtuple("Interface", "package kind name")):
    """A message or service type: from `package`.`kind` (msg or srv) import `name`."""


class Module:
    """One source file: its tree with parent links, and where each of its names comes from."""

    def __init__(self, path, dotted):
        self.path, self.dotted = path, dotted
        self.relative = os.path.relpath(path, SRC)
        with open(path, encoding="utf-8") as handle:
            self.tree = ast.parse(handle.read())
        self.parents = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
        self.imports = {}  # local name -> (module, name or None for the module itself)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = (node.module, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.imports[alias.asname] = (alias.name, None)
        self.assigned = {}  # module-level NAME = value
        for node in self.tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.assigned[node.targets[0].id] = node.value

    def ancestors(self, node):
        """The nodes enclosing `node`, innermost first."""
        while node in self.parents:
            node = self.parents[node]
            yield node

    def top_level(self, node):
        """The name of the module-level function or class `node` is in."""
        for parent in self.ancestors(node):
            if isinstance(parent, (ast.FunctionDef, ast.ClassDef)) and self.parents.get(parent) is self.tree:
                return parent.name
        return ""

    def qualified(self, function):
        """Class.method or function."""
        parent = self.parents.get(function)
        return f"{parent.name}.{function.name}" if isinstance(parent, ast.ClassDef) else function.name


class Graph:
    """Reads the modules and evaluates expressions in them."""

    def __init__(self):
        self.modules = {}

    def module(self, dotted):
        """Our module `dotted` (filesync.x.y), or None for another package's (rospy, a message package)."""
        if dotted not in self.modules:
            base = os.path.join(SRC, *dotted.split("."))
            path = base + ".py" if os.path.isfile(base + ".py") else os.path.join(base, "__init__.py")
            self.modules[dotted] = Module(path, dotted) if os.path.isfile(path) else None
        return self.modules[dotted]

    def imported(self, module_name, name):
        """The value `name` has in module `module_name`."""
        module = self.module(module_name)
        if module is None or module_name.split(".")[-1] in INTERFACE_KINDS and name not in module.assigned:
            parts = module_name.split(".")
            if len(parts) == 2 and parts[1] in INTERFACE_KINDS:  # from pkg.msg import Name
                return [Interface(parts[0], parts[1], name)]
            raise Unresolved(f"{module_name}.{name}")
        if name in module.assigned:
            return self.evaluate(module, module.assigned[name], {}, None)
        if name in module.imports:
            return self.name_from_import(module, name)
        raise Unresolved(name)

    def name_from_import(self, module, name):
        source, imported = module.imports[name]
        if imported is None:
            return [("module", source)]
        if self.module(source) is None and imported in INTERFACE_KINDS:  # from mavros_msgs import srv
            return [("module", f"{source}.{imported}")]
        return self.imported(source, imported)

    # evaluating: every function returns a list of the values an expression can have
    def evaluate(self, module, node, env, function):
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise Unresolved(ast.dump(node)[:80])
        return method(module, node, env, function)

    def _Constant(self, module, node, env, function):
        return [node.value]

    def _JoinedStr(self, module, node, env, function):
        parts = []
        for value in node.values:
            inner = value.value if isinstance(value, ast.FormattedValue) else value
            parts.append([str(part) for part in self.evaluate(module, inner, env, function)])
        return ["".join(combination) for combination in itertools.product(*parts)]

    def _Tuple(self, module, node, env, function):
        return [tuple(c) for c in itertools.product(*(self.evaluate(module, e, env, function) for e in node.elts))]

    _List = _Tuple

    def _Dict(self, module, node, env, function):
        keys = [self.evaluate(module, key, env, function)[0] for key in node.keys]
        values = [self.evaluate(module, value, env, function)[0] for value in node.values]
        return [dict(zip(keys, values))]

    def _Name(self, module, node, env, function):
        if node.id in env:
            return [env[node.id]]
        for scope in [function] + [f for f in (module.ancestors(function) if function else ())
                                   if isinstance(f, (ast.FunctionDef, ast.Lambda))]:
            if scope is None:
                continue
            for statement in ast.walk(scope):
                if isinstance(statement, ast.Assign) and any(isinstance(t, ast.Name) and t.id == node.id
                                                             for t in statement.targets):
                    return self.evaluate(module, statement.value, env, scope)
            default = parameter_default(scope, node.id)
            if default is not None:
                return self.evaluate(module, default, env, scope)
        if node.id in module.assigned:
            return self.evaluate(module, module.assigned[node.id], {}, None)
        if node.id in module.imports:
            return self.name_from_import(module, node.id)
        if (module.relative, node.id) in HANDED_IN:
            device, option = HANDED_IN[module.relative, node.id]
            return [option_default(self.module(device), option)]
        raise Unresolved(node.id)

    def _Attribute(self, module, node, env, function):
        if isinstance(node.value, ast.Name) and node.value.id == "self":
            return self.self_attribute(module, node, function)
        values = []
        for owner in self.evaluate(module, node.value, env, function):
            values += self.attribute(owner, node.attr)
        return values

    def attribute(self, owner, name):
        if isinstance(owner, tuple) and owner[:1] == ("module",):
            parts = owner[1].split(".")
            if parts[-1] in INTERFACE_KINDS:
                return [Interface(parts[-2], parts[-1], name)]
            return self.imported(owner[1], name)
        raise Unresolved(name)

    def self_attribute(self, module, node, function):
        """self.X: an assignment to it in the class, or a class attribute."""
        cls = next((p for p in module.ancestors(node) if isinstance(p, ast.ClassDef)), None)
        if cls is None:
            raise Unresolved(f"self.{node.attr}")
        for statement in cls.body:
            if isinstance(statement, ast.Assign) and any(isinstance(t, ast.Name) and t.id == node.attr
                                                         for t in statement.targets):
                return self.evaluate(module, statement.value, {}, None)
        for method in cls.body:
            if not isinstance(method, ast.FunctionDef):
                continue
            for statement in ast.walk(method):
                if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                    target = statement.targets[0]
                    if isinstance(target, ast.Attribute) and target.attr == node.attr and \
                            isinstance(target.value, ast.Name) and target.value.id == "self":
                        return self.evaluate(module, statement.value, {}, method)
        raise Unresolved(f"self.{node.attr}")

    def _Subscript(self, module, node, env, function):
        key_node = node.slice
        if isinstance(node.value, ast.Attribute) and node.value.attr == "options" or \
                isinstance(node.value, ast.Name) and node.value.id == "options":
            return [option_default(module, self.evaluate(module, key_node, env, function)[0])]
        values = []
        for container in self.evaluate(module, node.value, env, function):
            for key in self.evaluate(module, key_node, env, function):
                values.append(container[key])
        return values

    def _Call(self, module, node, env, function):
        func = node.func
        if isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) == 2:
            return [value for owner in self.evaluate(module, node.args[0], env, function)
                    for name in self.evaluate(module, node.args[1], env, function)
                    for value in self.attribute(owner, name)]
        if isinstance(func, ast.Attribute) and func.attr in ("lower", "rstrip", "strip", "items", "keys") and \
                not node.keywords:
            arguments = [self.evaluate(module, a, env, function)[0] for a in node.args]
            values = []
            for owner in self.evaluate(module, func.value, env, function):
                result = getattr(owner, func.attr)(*arguments)
                values.append(list(result) if func.attr in ("items", "keys") else result)
            return values
        if isinstance(func, ast.Attribute) and func.attr == "get_param" and len(node.args) == 2:
            return self.evaluate(module, node.args[1], env, function)  # the parameter's default names another
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
            return self.method_result(module, node, env, function)
        raise Unresolved(ast.dump(func)[:80])

    def method_result(self, module, node, env, function):
        """self.method(args) where the method only returns an expression of its parameters (self.service(name))."""
        cls = next((p for p in module.ancestors(node) if isinstance(p, ast.ClassDef)), None)
        method = next((m for m in cls.body if isinstance(m, ast.FunctionDef) and m.name == node.func.attr), None) \
            if cls else None
        returns = [statement for statement in method.body if isinstance(statement, ast.Return)] if method else []
        if len(returns) != 1 or len(node.args) != len(method.args.args) - 1:
            raise Unresolved(f"self.{node.func.attr}()")
        values = []
        for arguments in itertools.product(*(self.evaluate(module, a, env, function) for a in node.args)):
            bound = dict(zip((a.arg for a in method.args.args[1:]), arguments))
            values += self.evaluate(module, returns[0].value, bound, method)
        return values


def parameter_default(function, name):
    """The default of `function`'s parameter `name` (None: no such parameter, or no default)."""
    if isinstance(function, ast.Lambda) or function is None:
        return None
    arguments = function.args
    positional = arguments.posonlyargs + arguments.args
    for argument, default in zip(positional[len(positional) - len(arguments.defaults):], arguments.defaults):
        if argument.arg == name:
            return default
    for argument, default in zip(arguments.kwonlyargs, arguments.kw_defaults):
        if argument.arg == name and default is not None:
            return default
    return None


def option_default(module, key):
    """The default of the device option `key` as its module declares it: Option("key", type, default)."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Option" and len(node.args) >= 3 and \
                isinstance(node.args[0], ast.Constant) and node.args[0].value == key:
            return node.args[2].value
    raise Unresolved(f"options[{key!r}]")


def call_name(call):
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def bind(target, value, env):
    """Bind a loop's target (a name or nested tuple of names) to one of its values."""
    if isinstance(target, ast.Name):
        env[target.id] = value
    elif isinstance(target, ast.Tuple):
        for element, part in zip(target.elts, value):
            bind(element, part, env)


class Reader(Graph):
    """The endpoints of one generation's adapters."""

    def __init__(self, generation):
        super().__init__()
        self.generation = generation
        self.calls = ROS1_CALLS if generation == 1 else ROS2_CALLS
        self.users = ROS1_USERS if generation == 1 else ROS2_USERS
        self._resolving = set()

    def files(self):
        folder = "ros" if self.generation == 1 else "ros2"
        paths = [os.path.join(SRC, "filesync", folder, name)
                 for name in sorted(os.listdir(os.path.join(SRC, "filesync", folder))) if name.endswith(".py")]
        return paths

    def endpoints(self):
        """Every Endpoint of this generation's adapters; raises Unresolved naming the file and line it cannot read."""
        found = set()
        for path in self.files():
            dotted = os.path.relpath(path, SRC)[:-3].replace(os.sep, ".")
            module = self.module(dotted)
            for node in ast.walk(module.tree):
                if not isinstance(node, ast.Call):
                    continue
                if self.generation == 1 and call_name(node) == "Updater":
                    found |= {Endpoint(user, UPDATER[0], UPDATER[1], self.type_name(UPDATER[2]))
                              for user in self.users_of(module, node)}
                    continue
                if call_name(node) not in self.calls or self.inside_wrapper(module, node):
                    continue
                if call_name(node) == "Service" and not self.is_rospy(module, node):
                    continue
                direction, name_index, type_index = self.calls[call_name(node)]
                try:
                    pairs = self.name_and_type(module, node, name_index, type_index)
                except Unresolved as error:
                    raise Unresolved(f"{module.relative}:{node.lineno}: cannot evaluate {error}") from None
                for user in self.users_of(module, node):
                    found |= {Endpoint(user, direction, name, kind) for name, kind in pairs}
        return found

    def is_rospy(self, module, node):
        func = node.func
        return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "rospy"

    def inside_wrapper(self, module, node):
        for parent in module.ancestors(node):
            if isinstance(parent, ast.FunctionDef) and (module.relative, module.qualified(parent)) in WRAPPERS:
                return True
            if isinstance(parent, ast.ClassDef) and (module.relative, parent.name) in WRAPPERS:
                return True
        return False

    def users_of(self, module, node):
        key = (module.relative, module.top_level(node))
        users = self.users.get(key) or self.users.get((os.path.basename(module.relative), "*"))
        if users is None:
            raise Unresolved(f"{module.relative}:{node.lineno}: which processes run {key[1] or 'the module'}? "
                             "(add it to ros_graph's USERS)")
        for parent in module.ancestors(node):  # `if role == "finder":` narrows the worker roles
            if isinstance(parent, ast.If) and isinstance(parent.test, ast.Compare) and \
                    getattr(parent.test.left, "id", "") == "role":
                users = tuple(user for user in users if user == parent.test.comparators[0].value)
        return users

    def type_name(self, interface):
        package, kind, name = interface
        return f"{package}/{name}" if self.generation == 1 else f"{package}/{kind}/{name}"

    def name_and_type(self, module, call, name_index, type_index):
        """[(name, type)] of one call, over every binding of the loops and call sites around it."""
        pairs = set()
        function = next((p for p in module.ancestors(call) if isinstance(p, (ast.FunctionDef, ast.Lambda))), None)
        for env in self.environments(module, call):
            try:
                names = self.argument(module, call, name_index, env, function)
            except Unresolved as error:
                env = self.keys_of_subscripts(module, call, error.args[0], env, function)
                if env is None:
                    raise
                names = None
            for bound in env if isinstance(env, list) else [env]:
                for name in names if names is not None else self.argument(module, call, name_index, bound, function):
                    if type_index is None:
                        pairs.add((name, ""))
                        continue
                    for kind in self.argument(module, call, type_index, bound, function):
                        pairs.add((name, self.type_name(kind)))
        return pairs

    def argument(self, module, call, index, env, function):
        if index < len(call.args):
            return self.evaluate(module, call.args[index], env, function)
        raise Unresolved(f"argument {index} of {call_name(call)}")

    def keys_of_subscripts(self, module, call, variable, env, function):
        """A variable no loop or call site gives (handlers(...).items(), a transport's `name`): the keys of the dict it
        indexes in the same call (TYPES[name]), one environment each."""
        for node in ast.walk(call):
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Name) and node.slice.id == variable:
                container = self.evaluate(module, node.value, env, function)[0]
                return [{**env, variable: key} for key in container]
        return None

    def environments(self, module, call):
        """The bindings of the loop variables (for, comprehensions) and of the enclosing functions' parameters without
        a default (from their call sites in the module) around `call`."""
        envs = [{}]
        for parent in module.ancestors(call):
            loops = []
            if isinstance(parent, ast.For) and parent.iter is not call:
                loops = [(parent.target, parent.iter)]
            elif isinstance(parent, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                loops = [(generator.target, generator.iter) for generator in parent.generators]
            for target, iterable in loops:
                function = next((p for p in module.ancestors(parent) if isinstance(p, ast.FunctionDef)), None)
                try:
                    values = self.evaluate(module, iterable, {}, function)[0]
                except Unresolved:
                    continue  # keys_of_subscripts may still find them
                values = list(values.keys()) if isinstance(values, dict) else list(values)
                new = []
                for env in envs:
                    for value in values:
                        bound = dict(env)
                        bind(target, value, bound)
                        new.append(bound)
                envs = new
            if isinstance(parent, ast.FunctionDef):
                envs = [{**site, **env} for env in envs for site in self.call_sites(module, parent)]
                break
        return envs

    def call_sites(self, module, function):
        """One binding of `function`'s parameters without a default per call of it in the module ({} if none)."""
        arguments = function.args
        positional = [a.arg for a in arguments.posonlyargs + arguments.args]
        required = positional[:len(positional) - len(arguments.defaults)]
        is_method = isinstance(module.parents.get(function), ast.ClassDef)
        if is_method:
            positional, required = positional[1:], required[1:]
        if not required or function in self._resolving:
            return [{}]  # (a function reached again through its own call sites: its parameters stay unbound)
        self._resolving.add(function)
        try:
            return self._bindings_at_call_sites(module, function, positional, required, is_method)
        finally:
            self._resolving.discard(function)

    def _bindings_at_call_sites(self, module, function, positional, required, is_method):
        sites = []
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.Call) or call_name(node) != function.name:
                continue
            if is_method != isinstance(node.func, ast.Attribute):
                continue
            caller = next((p for p in module.ancestors(node) if isinstance(p, ast.FunctionDef)), None)
            given = dict(zip(positional, node.args))
            given.update({k.arg: k.value for k in node.keywords if k.arg})
            for env in self.environments(module, node):
                options = []
                for name in required:
                    try:
                        options.append([(name, value) for value in self.evaluate(module, given[name], env, caller)])
                    except (KeyError, Unresolved):
                        continue  # not given here, or not evaluable: left unbound (an error only if the name needs it)
                sites += [dict(choice) for choice in itertools.product(*options)]
        return sites or [{}]


def endpoints(generation):
    """The set of Endpoints of ROS `generation`'s adapters (1 or 2)."""
    return Reader(generation).endpoints()
