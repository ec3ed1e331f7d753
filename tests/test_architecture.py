"""The package's rooms and floors, read from its imports (every ``import`` statement, at the top of a
module or inside a function): helpers, then the model core, then datasets and trainers, then the
output root's store, then the results, then running, then the entry points. No module imports one
above its own floor, no two modules import each other, and no library file grows past ~500 lines."""
import ast
import os

from conftest import REPO

# package (as installed) -> its folder in the repository
FOLDERS = {"dept": "dept", "dept.trainers": "trainers", "dept.datasets": "datasets"}
FLOORS = {  # a module may import only from its own floor or lower ones
    "dept.version": 0, "dept._dassl_hook": 0, "dept.util": 0,
    "dept.core": 1,
    "dept.datasets": 2, "dept.trainers": 2,
    "dept.store": 3,
    "dept.results": 4,
    "dept.run": 5,
    "dept.analysis": 6,
    "dept": 6, "dept.__main__": 6,
}
MAX_LINES = 500


def modules():
    """{module name: (path, source)} of every module of the package."""
    out = {}
    for package, folder in FOLDERS.items():
        base = os.path.join(REPO, folder)
        for here, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
            for name in files:
                if not name.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(here, name), base)[:-3].split(os.sep)
                if package == "dept" and rel[0] in ("trainers", "datasets"):
                    continue
                parts = [p for p in rel if p != "__init__"]
                module = ".".join([package, *parts])
                with open(os.path.join(here, name)) as f:
                    out[module] = (os.path.join(here, name), f.read())
    return out


def imports(module, source):
    """The dept modules ``module`` imports (absolute or relative), wherever the statement is."""
    found = set()
    package = module if module in FOLDERS or source is None else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "dept"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "dept":
                continue
            found |= {f"{target}.{a.name}" for a in node.names}  # a submodule, or a name of ``target``
    return found


def resolve(name, known):
    """The module an imported name is (``dept.core.methods.Method`` -> ``dept.core.methods``)."""
    while name and name not in known:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name


def floor(module):
    best = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len)
    return FLOORS[best]


def graph():
    found = modules()
    return {m: {resolve(i, found) for i in imports(m, src)} - {m, ""} for m, (_, src) in found.items()}


def test_no_module_imports_a_floor_above_its_own():
    wrong = [(m, i) for m, targets in graph().items() for i in targets if floor(i) > floor(m)
             and not (m.startswith("dept.") and i == "dept" and floor(m) >= 5)]
    assert not wrong, "\n".join(f"{m} (floor {floor(m)}) imports {i} (floor {floor(i)})" for m, i in sorted(wrong))


def test_no_two_modules_import_each_other():
    edges = graph()
    pairs = sorted({tuple(sorted((a, b))) for a, targets in edges.items() for b in targets if a in edges.get(b, ())})
    assert not pairs, pairs


def test_helpers_and_the_core_never_import_the_package_itself():
    """``import dept`` registers every trainer and dataset: the lower floors never need it."""
    edges = graph()
    offenders = [m for m, targets in edges.items() if floor(m) <= 4 and "dept" in targets]
    assert not offenders, offenders


def test_library_files_stay_small():
    long = {m: src.count("\n") for m, (_, src) in modules().items() if src.count("\n") > MAX_LINES}
    assert not long, long


def test_every_package_says_what_it_holds():
    for module, (path, source) in modules().items():
        if path.endswith("__init__.py"):
            assert ast.get_docstring(ast.parse(source)), f"{module} has no docstring"
