"""The import contract: which part of the tree may import which, read from every module's AST.

The rules are by package, so a new module is covered the day it is added:

- ``eval/`` is the contest engine every process shares. It imports no chain SDK (``bittensor``,
  ``substrateinterface``, ...), no web framework (``fastapi``, ``starlette``, ``uvicorn``) and nothing
  from ``validator``, ``api``, ``scripts``, ``tests`` or ``miner``.
- ``validator/pod/`` is the GPU pod, a process of its own on another machine. It imports nothing from
  the host (``validator`` outside ``validator.pod``: chain, store, loop, contest, ...) and nothing from
  ``api``; checked on everything the pod loads (its imports' imports and parent packages included),
  not only on its own files.
- The host (``validator/`` outside the pod) never imports ``api``.
- ``api/`` publishes what the host has already decided and written down: from ``validator`` it imports
  only ``validator.store`` (it opens the database read-only and reads rows, tables and limits there),
  never the loop, the chain, the pod client or the contest logic, so it cannot decide anything itself.
- Product code (``eval``, ``validator``, ``api``, ``miner.py``) never imports ``scripts``, ``tests`` or
  ``miner``; ``scripts`` never imports ``tests``; nothing imports a test module (``tests/test_*.py``).
- ``scripts`` modules are imported as ``scripts.X``, and no module changes ``sys.path`` or loads code
  from a file path (``importlib.util.spec_from_file_location``, ``runpy.run_path``, ...).

Every import counts: top-level, inside functions, under ``TYPE_CHECKING``; relative ones are resolved.
A bare name of a file in ``tests/`` (``from hub_standin import FakeHub``, which works because pytest
puts ``tests/`` on the path) counts as ``tests.X``; a bare name of a file in ``scripts/`` is reported
(only a ``sys.path`` insert makes it work).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("eval", "validator", "api", "scripts", "tests")
PRODUCT = ("eval", "validator", "api", "miner")
CHAIN_SDK = frozenset(
    {
        "bittensor",
        "bittensor_core",
        "bittensor_wallet",
        "bittensor_commit_reveal",
        "bittensor_drand",
        "substrateinterface",
        "async_substrate_interface",
        "scalecodec",
        "bt_decode",
    }
)
WEB = frozenset({"fastapi", "starlette", "uvicorn"})
PATH_LOADERS = frozenset({"spec_from_file_location", "run_path", "SourceFileLoader", "load_source"})
SYS_PATH_EDITS = frozenset({"sys.path.insert", "sys.path.append", "sys.path.extend"})


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_sources(root: Path = ROOT) -> dict[str, tuple[str, bool]]:
    """Module name -> (source, is a package ``__init__``) for every Python file of the project."""
    files = [root / "miner.py"] + [p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))]
    return {module_name(p, root): (p.read_text(encoding="utf-8"), p.name == "__init__.py") for p in files}


def bare_names(sources: Iterable[str], package: str) -> frozenset[str]:
    """Top-level names of the files in ``package`` (what a bare ``import X`` would find with it on the path)."""
    return frozenset(m.split(".")[1] for m in sources if m.startswith(package + ".")) - set(PACKAGES) - {"miner"}


def import_statements(module: str, source: str, is_package: bool) -> list[tuple[int, list[str]]]:
    """Each import statement of ``module`` as (line, names), relative imports resolved.

    ``from X import a`` names ``X.a`` (a submodule or an attribute of ``X``: both start with ``X``).
    """
    found: list[tuple[int, list[str]]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.append((node.lineno, [alias.name for alias in node.names]))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                anchor = parts[: len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((node.lineno, [base if a.name == "*" else f"{base}.{a.name}" for a in node.names]))
    return found


def canonical(name: str, tests_names: frozenset[str], scripts_names: frozenset[str]) -> str:
    head = name.split(".")[0]
    if head in tests_names:
        return f"tests.{name}"
    if head in scripts_names:
        return f"scripts.{name}"
    return name


def violation(importer: str, target: str) -> str | None:
    """Why ``importer`` may not import ``target`` (both canonical dotted names), or None if it may."""
    top = target.split(".")[0]
    if within(importer, "eval"):
        if top in CHAIN_SDK:
            return "eval imports the chain SDK"
        if top in WEB:
            return "eval imports a web framework"
        if top in ("validator", "api", "scripts", "tests", "miner"):
            return f"eval imports {top}"
    # the bare package ``validator`` is every host and pod module's parent (empty, its imports are followed)
    host = within(target, "validator") and target != "validator"
    if within(importer, "validator.pod"):
        if host and not within(target, "validator.pod"):
            return "the pod imports a host module"
        if top == "api":
            return "the pod imports api"
    elif within(importer, "validator") and top == "api":
        return "the host imports api"
    if within(importer, "api") and host and not within(target, "validator.store"):
        return "api imports validator beyond the store"
    if importer.split(".")[0] in PRODUCT and top in ("scripts", "tests", "miner"):
        return f"product code imports {top}"
    if within(importer, "scripts") and top == "tests":
        return "a script imports tests"
    if within(target, "tests") and target.count(".") and target.split(".")[1].startswith("test_"):
        return "imports a test module"
    return None


def import_graph(sources: Mapping[str, tuple[str, bool]]) -> dict[str, dict[int, list[str]]]:
    """Module -> line -> the canonical names that line imports."""
    tests_names, scripts_names = bare_names(sources, "tests"), bare_names(sources, "scripts")
    return {
        module: {
            line: [canonical(n, tests_names, scripts_names) for n in names]
            for line, names in import_statements(module, source, is_package)
        }
        for module, (source, is_package) in sources.items()
    }


def violations(sources: Mapping[str, tuple[str, bool]]) -> list[str]:
    """Every import statement that breaks a rule, as ``importer:line -> target: why``."""
    scripts_names = bare_names(sources, "scripts")
    found = []
    for module, (source, is_package) in sorted(sources.items()):
        for line, names in import_statements(module, source, is_package):
            bare = next((n for n in names if n.split(".")[0] in scripts_names), None)
            if bare:
                found.append(f"{module}:{line} -> {bare}: a script imported by its bare name (import scripts.X)")
    for module, statements in sorted(import_graph(sources).items()):
        for line, targets in sorted(statements.items()):
            why = next(((t, w) for t in targets if (w := violation(module, t))), None)
            if why:
                found.append(f"{module}:{line} -> {why[0]}: {why[1]}")
    return found + pod_closure_violations(sources)


def loaded_by(start: Iterable[str], graph: Mapping[str, Mapping[int, list[str]]]) -> set[str]:
    """Project modules a process loads from ``start``: imports of imports, and every parent package."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        while name and name not in graph:  # ``from X import a`` names an attribute: its module is X
            name = name.rpartition(".")[0]
        if not name or name in seen:
            continue
        seen.add(name)
        todo += [t for targets in graph[name].values() for t in targets]
        todo += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
    return seen


def pod_closure_violations(sources: Mapping[str, tuple[str, bool]]) -> list[str]:
    graph = import_graph(sources)
    pod = [m for m in graph if within(m, "validator.pod")]
    bad = {m for m in loaded_by(pod, graph) if violation("validator.pod", m)}
    return [f"validator.pod loads {m}: {violation('validator.pod', m)}" for m in sorted(bad)]


def path_hacks(module: str, source: str) -> list[str]:
    """``sys.path`` edits and loading code from a file path: what turns modules back into loose files."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func.rpartition(".")[2] in PATH_LOADERS:
                found.append(f"{module}:{node.lineno}: loads code from a file path ({func})")
            elif func in SYS_PATH_EDITS:
                found.append(f"{module}:{node.lineno}: edits sys.path ({func})")
        elif isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(ast.unparse(t).startswith("sys.path") for t in targets):
                found.append(f"{module}:{node.lineno}: edits sys.path")
    return found


# --- the tree ------------------------------------------------------------------------------------------


def test_the_tree_keeps_the_import_contract() -> None:
    sources = project_sources()
    assert {"eval.rules", "validator.pod.server", "api.app", "scripts.demo", "miner"} <= set(sources)
    assert violations(sources) == []


def test_no_module_edits_sys_path_or_loads_files_by_path() -> None:
    found = [hack for m, (src, _) in project_sources().items() for hack in path_hacks(m, src)]
    assert found == []


def test_the_pod_process_loads_no_host_module() -> None:
    graph = import_graph(project_sources())
    loaded = loaded_by([m for m in graph if within(m, "validator.pod")], graph)
    assert "validator.pod.server" in loaded and "eval.runner" in loaded  # the walk really follows imports
    assert not [m for m in loaded if within(m, "validator") and not within(m, "validator.pod") and m != "validator"]


# --- the checker catches what it is for (it cannot pass by finding nothing) ----------------------------


def _fake(modules: dict[str, str]) -> dict[str, tuple[str, bool]]:
    tree = {"eval": "", "validator": "", "validator.pod": "", "api": "", "scripts": "", "tests": ""}
    return {name: (src, name in tree) for name, src in {**tree, **modules}.items()}


@pytest.mark.parametrize(
    ("module", "source", "why"),
    [
        ("eval.kl", "import bittensor as bt", "eval imports the chain SDK"),
        ("eval.kl", "def f():\n    from substrateinterface import Keypair", "eval imports the chain SDK"),
        ("eval.kl", "from fastapi import FastAPI", "eval imports a web framework"),
        ("eval.model_store.port", "from ...validator.store import database", "eval imports validator"),
        (
            "eval.kl",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from api.app import x",
            "eval imports api",
        ),
        ("eval.kl", "import miner", "eval imports miner"),
        ("validator.pod.jobs", "from validator.store.database import Store", "the pod imports a host module"),
        ("validator.pod.jobs", "from validator import loop", "the pod imports a host module"),
        ("validator.pod.auth", "from ..chain.port import ChainError", "the pod imports a host module"),
        ("validator.pod.jobs", "import api.views", "the pod imports api"),
        ("validator.loop", "from api.cache import TTLCache", "the host imports api"),
        ("api.views", "from validator.contest import Key", "api imports validator beyond the store"),
        ("api.views", "from validator import loop", "api imports validator beyond the store"),
        ("validator.loop", "from scripts.tiny_models import tiny_model", "product code imports scripts"),
        ("api.app", "from tests.pod_helpers import serve", "product code imports tests"),
        ("validator.settings", "import miner", "product code imports miner"),
        ("scripts.bench_pod", "from tests.pod_helpers import build_hub", "a script imports tests"),
        ("scripts.bench_api", "from api_fixtures import build_store", "a script imports tests"),
        ("tests.test_lessons", "from test_model_store_huggingface import FakeHub", "imports a test module"),
        ("scripts.demo", "from demo_cast import NETUID", "a script imported by its bare name"),
    ],
)
def test_the_checker_reports_a_synthetic_violation(module: str, source: str, why: str) -> None:
    fakes = {"tests.api_fixtures": "", "tests.test_model_store_huggingface": "", "scripts.demo_cast": ""}
    found = violations(_fake({**fakes, module: source}))
    direct = [v for v in found if not v.startswith("validator.pod loads ")]  # the pod's walk may add its own line
    assert len(direct) == 1 and direct[0].startswith(module + ":") and why in direct[0], found


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("eval.kl", "from eval.errors import KLError\nfrom .rules import ContestRules\nimport torch"),
        ("validator.pod.server", "from eval.runner import run_job\nfrom validator.pod.jobs import JobManager"),
        ("validator.pod.server", "from . import jobs\nimport bittensor\nfrom fastapi import FastAPI"),
        ("validator.loop", "from validator.store.database import Store\nfrom eval.rules import ContestRules"),
        ("api.views", "from validator.store.database import Store\nfrom validator.store import reads"),
        ("miner", "from validator.chain import submit\nfrom eval.admission import check_model"),
        ("scripts.bench_api", "from scripts.contest_store import build_store\nfrom validator.store import database"),
        ("tests.test_api", "from scripts.contest_store import build_store\nfrom hub_standin import FakeHub"),
    ],
)
def test_the_checker_allows_what_the_rules_allow(module: str, source: str) -> None:
    assert violations(_fake({module: source, "tests.hub_standin": ""})) == []


def test_the_pod_closure_follows_imports_and_parent_packages() -> None:
    # each pod module is clean on its own; the host module comes in through an import of an import
    through_eval = _fake({"validator.pod.server": "from eval import bridge", "eval.bridge": "import validator.weights"})
    through_eval["validator.weights"] = ("", False)
    assert any("validator.pod loads validator.weights" in v for v in violations(through_eval))
    # or through the parent package, which Python runs before any of its subpackages
    through_parent = _fake({"validator.pod.server": "import json", "validator.store": ""})
    through_parent["validator"] = ("from validator.store import database", True)
    assert any("validator.pod loads validator.store" in v for v in violations(through_parent))


@pytest.mark.parametrize(
    "source",
    [
        "import sys\nsys.path.insert(0, 'x')",
        "import sys\nsys.path[:0] = ['x']",
        "import sys\nsys.path += ['x']",
        "import importlib.util\nspec = importlib.util.spec_from_file_location('m', 'scripts/distill.py')",
        "import runpy\nrunpy.run_path('scripts/demo.py')",
        "from runpy import run_path\nrun_path('scripts/demo.py')",
    ],
)
def test_path_hacks_are_reported(source: str) -> None:
    assert len(path_hacks("scripts.x", source)) == 1
    assert path_hacks("scripts.x", "import os\nos.environ['PYTHONPATH'] = '.'\nprint(sys.path)") == []
