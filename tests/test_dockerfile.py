"""The Dockerfile cannot be built on CI (no Docker engine), so check what it promises."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    joined, parts = [], []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        joined.append(" ".join(parts))
        parts = []
    assert not parts, "Dockerfile ends inside a line continuation"
    result = []
    for entry in joined:
        keyword, _, args = entry.partition(" ")
        result.append((keyword.upper(), args))
    return result


def test_dockerfile_parses_into_known_instructions():
    known = {"FROM", "ENV", "RUN", "COPY", "WORKDIR", "USER", "CMD", "ARG", "LABEL", "ENTRYPOINT"}
    parsed = instructions()
    assert parsed[0][0] == "FROM"
    assert {keyword for keyword, _ in parsed} <= known


def test_cuda_runtime_base_image():
    base = instructions()[0][1]
    assert base.startswith("nvidia/cuda:") and "runtime" in base


def test_installs_the_locked_environment():
    parsed = instructions()
    runs = [args for keyword, args in parsed if keyword == "RUN"]
    assert any("uv sync --frozen" in r for r in runs), "must install exactly uv.lock"
    copies = [args for keyword, args in parsed if keyword == "COPY"]
    assert any(c.split()[0] == "." for c in copies), "the workspace (with uv.lock) is copied in"
    assert (ROOT / "uv.lock").exists()
    assert "uv.lock" not in (ROOT / ".dockerignore").read_text().split()


def test_runs_as_non_root_with_mpi_checked():
    parsed = instructions()
    users = [args for keyword, args in parsed if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(keyword == "RUN" and "mpirun -n 2" in args for keyword, args in parsed)
    env = " ".join(args for keyword, args in parsed if keyword == "ENV")
    assert "/opt/venv/bin" in env
