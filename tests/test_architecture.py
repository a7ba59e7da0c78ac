"""The layering of ``shared/DESIGN.md`` and "no package touches another package's private names".

Walks every module of ``src/fokker`` with ``ast`` (no import needed) and checks:

* **layering**: a module imports only from packages of a lower layer (layer-0 modules may
  also import each other);
* **private names**: no ``from fokker.<pkg>._module import ...`` / ``from fokker.<pkg>.m import _name``
  across packages, and no ``obj._name`` / ``getattr(obj, "_name")`` on another object than
  ``self``/``cls``/``super()`` where ``_name`` is defined only in other packages (a hook a
  package defines itself, e.g. an override, may be called inside that package);
* **one implementation** of the spine's functions: a public module-level function or class
  name is defined in one package only (shared math lives once).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fokker"

#: Layers of DESIGN.md (lower number = lower layer).  Top-level modules are packages of their own.
LAYERS: dict[str, int] = {
    **dict.fromkeys(
        ["errors", "_args", "_random", "_progress", "_gaussian", "tolerances", "data", "importance", "divergence", "metrics", "nets"],
        0,
    ),
    **dict.fromkeys(["targets", "sde", "flows", "train", "datasets"], 1),
    **dict.fromkeys(["analytic", "checks", "mcmc", "symbolic"], 2),
    **dict.fromkeys(["diffusion", "ebm", "neural_sde"], 3),
    **dict.fromkeys(["samplers", "vae", "gan"], 4),
    "validate": 5,
    "cli": 6,
    "__init__": 7,
}

#: Module-level public names allowed in more than one package, with the reason.
SHARED_NAMES: dict[str, str] = {
    "annealed_langevin": "diffusion's sampler is a thin adapter over mcmc.annealed_langevin",
    "sample": "mcmc.sample (driver) and datasets.toy.sample (data) are different verbs on different objects",
    "register": "validate.register only; other packages' register_* are different",
    "load": "datasets.load (data sets), train.load (checkpoints) and flows.load (saved flows)",
    "save": "flows.save (saved flows) and train.save (checkpoints)",
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC).with_suffix("")
        out.append((".".join(("fokker", *rel.parts)), p))
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, tree: ast.AST) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import statement, lazy ones included."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("fokker")]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_pkg, node)
            if target.startswith("fokker"):
                out.append((target, [a.name for a in node.names], node.lineno))
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@pytest.fixture(scope="module")
def parsed() -> dict[str, tuple[Path, ast.AST]]:
    return {m: (p, ast.parse(p.read_text(), str(p))) for m, p in _modules()}


def test_every_package_has_a_layer(parsed) -> None:
    missing = sorted({_package(m) for m in parsed} - set(LAYERS))
    assert not missing, f"packages without a layer in DESIGN.md / this test: {missing}"


def test_imports_follow_the_layers(parsed) -> None:
    bad = []
    for module, (path, tree) in parsed.items():
        src_pkg = _package(module)
        for target, names, line in _imports(module, path, tree):
            dst = target.split(".")
            if len(dst) == 1:  # `from fokker import x`: x is a package (or module) of its own
                dst_pkgs = [n for n in names if n in LAYERS]
            else:
                dst_pkgs = [dst[1]]
            for dst_pkg in dst_pkgs:
                if dst_pkg == src_pkg or src_pkg == "__init__":
                    continue
                a, b = LAYERS[src_pkg], LAYERS.get(dst_pkg, 0)
                if not (a > b or (a == 0 and b == 0)):
                    bad.append(f"{path.relative_to(SRC)}:{line}: {src_pkg} (layer {a}) imports {dst_pkg} (layer {b})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def _definitions(parsed) -> dict[str, set[str]]:
    """Private names defined per package: functions, classes, module/class attributes, self._x = ..."""
    defined: dict[str, set[str]] = defaultdict(set)
    for module, (_, tree) in parsed.items():
        pkg = _package(module)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined[pkg].add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for sub in ast.walk(t):
                        if isinstance(sub, ast.Name):
                            defined[pkg].add(sub.id)
                        elif isinstance(sub, ast.Attribute):
                            defined[pkg].add(sub.attr)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr":
                if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
                    defined[pkg].add(str(node.args[1].value))
            elif isinstance(node, ast.ClassDef):
                pass
        for node in ast.walk(tree):  # __slots__ entries
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
                for c in ast.walk(node.value):
                    if isinstance(c, ast.Constant) and isinstance(c.value, str):
                        defined[pkg].add(c.value)
    return defined


def _owner_is_self(value: ast.AST) -> bool:
    if isinstance(value, ast.Name) and value.id in ("self", "cls"):
        return True
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super"


def test_no_private_names_across_packages(parsed) -> None:
    defined = _definitions(parsed)
    everywhere = set().union(*defined.values())
    bad = []
    for module, (path, tree) in parsed.items():
        pkg = _package(module)
        where = str(path.relative_to(SRC))
        for target, names, line in _imports(module, path, tree):
            parts = target.split(".")
            dst_pkg = parts[1] if len(parts) > 1 else None
            if dst_pkg is None or dst_pkg == pkg or LAYERS.get(dst_pkg) == 0:
                continue  # library-wide internals (fokker._args, fokker._random, ...) are shared on purpose
            private_mod = [p for p in parts[2:] if _is_private(p)]
            private_names = [n for n in names if _is_private(n)]
            if private_mod or private_names:
                bad.append(f"{where}:{line}: imports {target}:{private_mod + private_names} from package {dst_pkg}")
        for node in ast.walk(tree):
            name, owner = None, None
            if isinstance(node, ast.Attribute) and _is_private(node.attr):
                name, owner = node.attr, node.value
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and _is_private(node.args[1].value)
            ):
                name, owner = node.args[1].value, node.args[0]
            if name is None or _owner_is_self(owner):
                continue
            if name in everywhere and name not in defined[pkg]:
                owners = sorted(p for p, names in defined.items() if name in names)
                bad.append(f"{where}:{node.lineno}: accesses {name} (defined in {owners})")
    assert not bad, "private names used across packages:\n" + "\n".join(bad)


def test_each_public_name_lives_in_one_package(parsed) -> None:
    where: dict[str, set[str]] = defaultdict(set)
    for module, (_, tree) in parsed.items():
        pkg = _package(module)
        if pkg in ("validate", "cli", "__init__"):
            continue
        for node in tree.body:  # module level only
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not _is_private(node.name):
                where[node.name].add(pkg)
    dup = {n: sorted(p) for n, p in where.items() if len(p) > 1 and n not in SHARED_NAMES}
    assert not dup, f"the same public name defined in several packages (one implementation each): {dup}"
