"""The Dockerfile: what it promises (read from its text), and a real build where Docker can.

The build test needs a Docker engine with BuildKit and the base image (pulled, or already
there); it skips with the reason otherwise (CI machines without Docker, or without access
to the registry).
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGE_TAG = "parallel-rl:test"


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


def base_image() -> str:
    """FROM's image, with a leading ``ARG BASE_IMAGE=...`` default substituted."""
    parsed = instructions()
    args = dict(a.split("=", 1) for k, a in parsed if k == "ARG" and "=" in a)
    image = next(a for k, a in parsed if k == "FROM")
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)


def test_dockerfile_parses_into_known_instructions():
    known = {"FROM", "ENV", "RUN", "COPY", "WORKDIR", "USER", "CMD", "ARG", "LABEL", "ENTRYPOINT"}
    parsed = instructions()
    assert parsed[0][0] in ("ARG", "FROM")
    assert {keyword for keyword, _ in parsed} <= known


def test_cuda_base_image_without_a_second_cuda():
    # torch's wheels carry CUDA; the base image only adds the container runtime settings.
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-base-ubuntu24\.04", base_image())
    text = (ROOT / "Dockerfile").read_text()
    assert "R580" in text, "the NVIDIA driver the locked torch needs is documented"
    assert "BASE_IMAGE=ubuntu:24.04" in text, "the CPU-only build is documented"


def test_locked_dependencies_are_installed_before_the_source_is_copied():
    parsed = instructions()
    copy_all = next(i for i, (k, a) in enumerate(parsed) if k == "COPY" and a.split()[0] == ".")
    deps = next(
        i for i, (k, a) in enumerate(parsed) if k == "RUN" and "uv sync" in a and "--no-install-workspace" in a
    )
    assert deps < copy_all, "an edit to the source must not rebuild the torch layer"
    before = [a for k, a in parsed[:deps] if k == "COPY"]
    copied = " ".join(before)
    assert "uv.lock" in copied and "pyproject.toml" in copied
    assert "README.md" not in copied and " . " not in f" {copied} "  # docs edits keep the layer
    for package in sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists()):
        assert f"packages/{package}/pyproject.toml" in copied, package
    syncs = [a for k, a in parsed if k == "RUN" and "uv sync" in a]
    assert len(syncs) == 2 and all("--frozen" in a for a in syncs), "exactly uv.lock"
    assert (ROOT / "uv.lock").exists()
    assert "uv.lock" not in (ROOT / ".dockerignore").read_text().split()


def test_the_uv_cache_is_a_build_cache_mount_never_a_layer():
    for keyword, args in instructions():
        if keyword == "RUN" and re.search(r"\buv (sync|pip)\b", args):
            assert "--mount=type=cache,target=/root/.cache/uv" in args, args
    assert (ROOT / "Dockerfile").read_text().startswith("# syntax=docker/dockerfile:1")


def test_uid_1000_is_freed_before_our_user_takes_it():
    runs = [a for k, a in instructions() if k == "RUN" and "useradd" in a]
    assert runs
    for args in runs:
        if "--uid 1000" in args:  # Ubuntu 24.04 images ship user "ubuntu" at UID 1000
            assert args.index("userdel") < args.index("useradd") and "ubuntu" in args


def test_runs_as_non_root_with_mpi_checked():
    parsed = instructions()
    users = [args for keyword, args in parsed if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(keyword == "RUN" and "mpirun -n 2" in args for keyword, args in parsed)
    env = " ".join(args for keyword, args in parsed if keyword == "ENV")
    assert "/opt/venv/bin" in env


def docker_available() -> str | None:
    """Why the image cannot be built here, or None when it can."""
    if shutil.which("docker") is None:
        return "docker not installed"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines()
        return f"no Docker engine: {lines[-1] if lines else 'docker info failed'}"
    image = base_image()
    have = subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=60)
    if have.returncode != 0:
        pull = subprocess.run(["docker", "pull", image], capture_output=True, text=True, timeout=600)
        if pull.returncode != 0:
            lines = pull.stderr.strip().splitlines()
            return f"cannot pull the base image {image}: {lines[-1] if lines else 'docker pull failed'}"
    return None


@pytest.fixture(scope="module")
def built_image():
    reason = docker_available()
    if reason is not None:
        pytest.skip(reason)
    build = subprocess.run(
        ["docker", "build", "-t", IMAGE_TAG, str(ROOT)],
        env={**os.environ, "DOCKER_BUILDKIT": "1"}, capture_output=True, text=True, timeout=3600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    yield IMAGE_TAG
    subprocess.run(["docker", "image", "rm", "-f", IMAGE_TAG], capture_output=True, timeout=300)


@pytest.mark.timeout(4000)
def test_image_builds_and_runs_a_job(built_image):
    run = subprocess.run(
        ["docker", "run", "--rm", "-e", "PARALLEL_RL_SMOKE=1", built_image, "mpirun", "-n", "2", "empo-prior", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert '"ranks": 2' in run.stdout


def test_image_runs_as_uid_1000_and_holds_no_uv_cache(built_image):
    who = subprocess.run(["docker", "run", "--rm", built_image, "id", "-u"], capture_output=True, text=True, timeout=300)
    assert who.stdout.strip() == "1000"
    cache = subprocess.run(
        ["docker", "run", "--rm", "--user", "root", built_image, "sh", "-c",
         "if [ -e /root/.cache/uv ] || [ -e /home/researcher/.cache/uv ]; then echo present; else echo absent; fi"],
        capture_output=True, text=True, timeout=300,
    )
    assert cache.stdout.strip() == "absent", cache.stdout
