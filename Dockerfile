# syntax=docker/dockerfile:1
# parallel-rl on a GPU node, for Docker or Apptainer. Needs BuildKit (cache mount below):
# Docker >= 23 uses it by default; older: DOCKER_BUILDKIT=1 docker build ...
#
#   docker build -t parallel-rl .
#   docker run --gpus all parallel-rl esper train ppo --devices cuda:0
#   docker run parallel-rl mpirun -n 4 empo-prior --world large
#   apptainer build parallel-rl.sif docker-daemon://parallel-rl:latest
#   apptainer exec --nv parallel-rl.sif mpirun -n 2 empo-prior
#   (on Slurm with the host MPI bound in: tools/slurm/empo-prior-apptainer.sbatch)
#
# GPU driver: the locked torch (2.15.0+cu132) brings the CUDA 13.2 user-space libraries as
# wheels; the host needs only the NVIDIA driver, R580 or newer (the CUDA 13 family; minor-
# version compatibility lets 13.2 run on any R580+ driver). Check with nvidia-smi on the host.
# The small "base" CUDA image adds the container runtime settings, not a second copy of CUDA.
#
# CPU-only image: docker build --build-arg BASE_IMAGE=ubuntu:24.04 -t parallel-rl:cpu .
# (the locked CUDA torch wheels run on CPU too). A CPU-only environment without the ~3 GB of
# CUDA wheels is described in docs/mpi-on-clusters.md ("Containers, GPUs and CPU-only").
ARG BASE_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_FROZEN=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    OMP_NUM_THREADS=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

COPY --from=ghcr.io/astral-sh/uv:0.13 /uv /uvx /usr/local/bin/

WORKDIR /opt/parallel-rl

# 1. Third-party dependencies, exactly as locked, from the lock and the project files alone:
#    this layer (torch and its CUDA wheels) is rebuilt only when uv.lock or a pyproject.toml
#    changes, never for a source edit. The uv cache lives in a BuildKit cache mount, so it
#    speeds up rebuilds and never ends up in the image.
COPY pyproject.toml uv.lock .python-version ./
COPY packages/parallel-core/pyproject.toml packages/parallel-core/
COPY packages/empo-distributed/pyproject.toml packages/empo-distributed/
COPY packages/cogames-parallel/pyproject.toml packages/cogames-parallel/
COPY packages/esper-multigpu/pyproject.toml packages/esper-multigpu/
COPY packages/agent-async-train/pyproject.toml packages/agent-async-train/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --all-extras --no-default-groups --no-install-workspace --python /usr/bin/python3

# 2. The workspace itself (small, quick): the five packages and their console scripts.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --all-extras --no-default-groups --python /usr/bin/python3 \
    && chmod -R a+rX /opt/venv /opt/parallel-rl

# Apptainer runs as the host user with a read-only image: nothing here writes at run time.
# Ubuntu 24.04 images already have a user "ubuntu" at UID 1000: reuse the UID under our name.
RUN userdel --remove ubuntu 2>/dev/null || true; \
    useradd --create-home --uid 1000 researcher
USER researcher
WORKDIR /home/researcher
ENV PATH="/opt/venv/bin:${PATH}"

# The image's own check: mpi4py and the bundled MPICH run 2 real ranks.
RUN mpirun -n 2 python -c "from mpi4py import MPI; assert MPI.COMM_WORLD.Get_size() == 2"
CMD ["empo-prior", "--help"]
