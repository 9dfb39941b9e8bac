"""Every command in a ```bash block of README.md and docs/*.md runs, as a user copies it.

Commands run with ``PARALLEL_RL_SMOKE=1`` (every CLI shrinks its job to seconds) through
``bash -c``, in document order, from a temporary folder that links to the repository's
files: ``uv run ...`` finds the workspace, ``tools/...`` paths resolve, and what the
commands write (``prior.npz``, ``runs/demo``) lands in the temporary folder, never the
repository. Commands that cannot run here (a GPU, a cluster, the user's own files) belong
in ```console or ```text blocks; the few ```bash commands that must fail here are listed in
``EXPECTED_FAILURES`` with the exit code and the one line they must print.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT_S = 240  # a smoke-sized command takes ~20 s; the shared CI machine may be slow


@dataclass(frozen=True)
class Command:
    doc: str  # path relative to the repository
    line: int  # line of the block where the command starts
    text: str  # what bash runs (continuations joined, comments dropped)

    @property
    def id(self) -> str:
        short = re.sub(r"\s+", " ", self.text)[:70]
        return f"{self.doc}:{self.line}: {short}"


def strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` inside quotes or a word stays)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
            elif char == "\\" and quote == '"':
                continue
        elif char in ("'", '"'):
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t;"):
            return line[:i].rstrip()
    return line.rstrip()


def extract_commands(markdown: str, doc: str = "doc.md") -> list[Command]:
    """Commands of the ```bash blocks: ``\\`` continuations joined, comments and blanks dropped."""
    commands: list[Command] = []
    in_block = False
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(markdown.splitlines(), start=1):
        stripped = raw.strip()
        if not in_block:
            if re.fullmatch(r"```\s*bash\s*", stripped):
                in_block = True
            continue
        if stripped.startswith("```"):
            in_block = False
            if pending:  # a block never ends inside a continuation; keep what is there
                commands.append(Command(doc, start, " ".join(pending)))
                pending = []
            continue
        if not pending:
            start = number
        text = strip_comment(raw) if not raw.rstrip().endswith("\\") else raw.rstrip()[:-1].rstrip()
        if raw.rstrip().endswith("\\"):
            pending.append(text.strip())
            continue
        pending.append(text.strip())
        joined = " ".join(part for part in pending if part)
        pending = []
        if joined:
            commands.append(Command(doc, start, joined))
    return commands


def all_commands() -> list[Command]:
    found = []
    for path in DOCS:
        found.extend(extract_commands(path.read_text(), str(path.relative_to(ROOT))))
    return found


def gpu_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


# (pattern on the command, exit code, pattern its stderr must contain, why it fails in CI).
# Only for commands that must fail where CI runs; each states exactly how.
EXPECTED_FAILURES = [
    (
        r"--devices cuda:0 cuda:1",
        2,
        r"error: requested cuda:\d.*(visible|use --devices cpu)",
        "needs 2 GPUs; without them it must refuse at once with one line (exit 2)",
        lambda: gpu_count() < 2,
    ),
    (
        r"--devices? cuda:0(?! cuda:1)",
        2,
        r"error: requested cuda:0.*(visible|use --devices? cpu)",
        "needs a GPU; without one it must refuse at once with one line (exit 2)",
        lambda: gpu_count() < 1,
    ),
]


# Commands that run a test suite: CI runs those suites in their own nox sessions already.
NOT_RERUN = re.compile(r"(^|[\s;&|])(pytest|nox)(\s|$)")


def expected_failure(command: Command):
    for pattern, code, stderr, reason, applies in EXPECTED_FAILURES:
        if re.search(pattern, command.text) and applies():
            return code, stderr, reason
    return None


def unique(commands: list[Command]) -> list[Command]:
    """Each command text once, at its first place (README repeats the package docs' examples)."""
    seen: set[str] = set()
    kept = []
    for command in commands:
        if command.text not in seen:
            seen.add(command.text)
            kept.append(command)
    return kept


COMMANDS = unique(all_commands())
ROOT_BEFORE = set(os.listdir(ROOT))  # before any command ran


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    """One temporary folder per document (its commands build on each other, in order)."""
    made: dict[str, Path] = {}

    def folder(doc: str) -> Path:
        if doc not in made:
            path = tmp_path_factory.mktemp(re.sub(r"\W", "_", doc))
            for name in linked_entries():
                (path / name).symlink_to(ROOT / name)
            made[doc] = path
        return made[doc]

    return folder


def linked_entries() -> list[str]:
    """The repository's own top-level files and folders (tracked by git) and ``.venv``.

    Only these: an output folder left in a working copy (``runs/``, ``esper-telemetry/``)
    must not be linked, or documented commands would write through the link into it.
    """
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout:
        names = {line.split("/", 1)[0] for line in listed.stdout.splitlines()}
    else:
        names = {"pyproject.toml", "uv.lock", ".python-version", "README.md", "packages", "tools", "docs", "tests"}
    names.add(".venv")
    return sorted(name for name in names if (ROOT / name).exists())


def command_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PMI_", "OMPI_", "PMIX_", "MPI_LOCAL", "MPI4PY_", "PARALLEL_CORE_", "PYTEST_"))
    }
    env.update(
        PARALLEL_RL_SMOKE="1",
        UV_FROZEN="1",  # `uv run` must not rewrite uv.lock from CI
        # An Open MPI mpirun first on PATH refuses root and more ranks than cores unless told.
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_rmaps_base_oversubscribe="1",
    )
    # The test environment's tools (mpirun of the mpich wheel, uv) come first, as in an activated venv.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_extractor_joins_continuations_and_drops_comments():
    markdown = (
        "text\n```bash\n# a comment line\nuv run x --a 1 \\\n    --b 'q # r'   # trailing\n\n"
        "mpirun -n 2 y -m 'h.*' ; z#not-a-comment\n```\n```console\nnot run\n```\n"
    )
    commands = extract_commands(markdown, "t.md")
    assert [c.text for c in commands] == ["uv run x --a 1 --b 'q # r'", "mpirun -n 2 y -m 'h.*' ; z#not-a-comment"]
    assert [c.line for c in commands] == [4, 7]


def test_documents_have_commands():
    assert len(COMMANDS) >= 10
    assert {c.doc for c in COMMANDS} >= {"README.md"}


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_documented_command_runs(command: Command, workdirs):
    if NOT_RERUN.search(command.text):
        pytest.skip("runs a test suite: CI runs it in its own nox session")
    cwd = workdirs(command.doc)
    started = time.perf_counter()
    try:
        result = subprocess.run(
            ["bash", "-c", command.text], cwd=cwd, env=command_env(), capture_output=True, text=True,
            timeout=TIMEOUT_S, start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{command.id}: still running after {TIMEOUT_S} s in smoke mode ({exc.stderr!r:.500})")
    elapsed = time.perf_counter() - started
    tail = "\n".join(result.stderr.strip().splitlines()[-8:])
    expected = expected_failure(command)
    if expected is not None:
        code, pattern, reason = expected
        assert result.returncode == code, f"expected exit {code} ({reason}), got {result.returncode}:\n{tail}"
        error_lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert any(re.search(pattern, line) for line in error_lines), tail
        assert "Traceback" not in result.stderr, tail
        return
    assert result.returncode == 0, f"exit {result.returncode} after {elapsed:.0f} s:\n{tail}"


def test_no_command_writes_into_the_repository():
    """The linked folders are the repository's: documented outputs must land in the cwd."""
    appeared = sorted(set(os.listdir(ROOT)) - ROOT_BEFORE)
    assert appeared == [], f"documented commands wrote into the repository root: {appeared}"
