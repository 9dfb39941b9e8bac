"""Workspace rules: packages depend on parallel-core and on no other sibling."""

import ast
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "parallel-core": "parallel_core",
    "empo-distributed": "empo_distributed",
    "cogames-parallel": "cogames_parallel",
    "esper-multigpu": "esper_multigpu",
    "agent-async-train": "agent_async_train",
}
SCRIPTS = {
    "empo-distributed": "empo-prior",
    "cogames-parallel": "cogames",
    "esper-multigpu": "esper",
    "agent-async-train": "agent-train",
}


def pyproject(name: str) -> dict:
    return tomllib.loads((ROOT / "packages" / name / "pyproject.toml").read_text())


def test_root_is_a_workspace_of_all_packages():
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert root["tool"]["uv"]["workspace"]["members"] == ["packages/*"]
    found = {p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists()}
    assert found == set(PACKAGES)
    lock = (ROOT / "uv.lock").read_text()
    for name in PACKAGES:
        assert f'name = "{name}"' in lock


@pytest.mark.parametrize("name", PACKAGES)
def test_layout_and_python_version(name):
    package_dir = ROOT / "packages" / name
    assert (package_dir / "src" / PACKAGES[name] / "__init__.py").exists()
    assert (package_dir / "tests").is_dir()
    assert pyproject(name)["project"]["requires-python"] == ">=3.11"


@pytest.mark.parametrize("name", PACKAGES)
def test_no_sibling_dependencies(name):
    deps = pyproject(name)["project"].get("dependencies", [])
    siblings = {
        d.split(";")[0].split(">")[0].split("=")[0].split("[")[0].strip() for d in deps
    } & set(PACKAGES)
    assert siblings <= {"parallel-core"} - {name}


@pytest.mark.parametrize("name", PACKAGES)
def test_no_sibling_imports(name):
    forbidden = {module for pkg, module in PACKAGES.items() if pkg not in (name, "parallel-core")}
    for source in (ROOT / "packages" / name).rglob("*.py"):
        tree = ast.parse(source.read_text(), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] not in forbidden, f"{source} imports sibling {module}"


@pytest.mark.parametrize("name, script", SCRIPTS.items())
def test_console_scripts_declared_and_installed(name, script):
    assert script in pyproject(name)["project"]["scripts"]
    assert (Path(sys.executable).parent / script).exists()
