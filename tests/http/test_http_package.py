"""The package's own promises: pure (no I/O imports), documented, examples that run."""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
import pathlib

import pytest

import shardcache._http as http_package

PACKAGE_DIR = pathlib.Path(http_package.__file__).parent
MODULES = sorted(path.stem for path in PACKAGE_DIR.glob("*.py"))
# Anything that does I/O, runs an event loop, or ties the rules to one framework.
FORBIDDEN_IMPORTS = {
    "aiohttp",
    "anyio",
    "asyncio",
    "http",
    "io",
    "os",
    "pathlib",
    "shutil",
    "socket",
    "sqlite3",
    "starlette",
    "subprocess",
    "threading",
}


@pytest.mark.parametrize("module", MODULES)
def test_no_io_imports(module: str) -> None:
    tree = ast.parse((PACKAGE_DIR / f"{module}.py").read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN_IMPORTS


@pytest.mark.parametrize("module", MODULES)
def test_modules_stay_small(module: str) -> None:
    lines = (PACKAGE_DIR / f"{module}.py").read_text(encoding="utf-8").count("\n")
    assert lines < 400


@pytest.mark.parametrize("module", [name for name in MODULES if name != "__init__"])
def test_docstring_examples_run(module: str) -> None:
    imported = importlib.import_module(f"shardcache._http.{module}")
    result = doctest.testmod(imported, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in http_package.__all__:
        value = getattr(http_package, name)
        if inspect.isfunction(value) or inspect.isclass(value):
            assert inspect.getdoc(value), name
    assert sorted(http_package.__all__) == sorted(set(http_package.__all__))


def test_the_package_docstring_lists_every_exported_name() -> None:
    doc = http_package.__doc__ or ""
    missing = [name for name in http_package.__all__ if name not in doc]
    assert missing == []
