# parallel-rl on a GPU node, for Docker or Apptainer.
#
#   docker build -t parallel-rl .
#   docker run --gpus all parallel-rl esper train ppo --devices cuda:0
#   docker run parallel-rl mpirun -n 4 empo-prior --world large
#   apptainer build parallel-rl.sif docker-daemon://parallel-rl:latest
#   apptainer exec --nv parallel-rl.sif mpirun -n 2 empo-prior
#
# The CUDA user-space libraries come with the torch wheels in uv.lock; the base image
# supplies the NVIDIA container runtime hooks, the host supplies the driver (--gpus / --nv).
FROM nvidia/cuda:13.0.0-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    OMP_NUM_THREADS=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /uvx /usr/local/bin/

WORKDIR /opt/parallel-rl
COPY . .
# Exactly the locked versions; mpi4py + the mpich wheel give a working mpirun inside.
RUN uv sync --frozen --no-default-groups --python /usr/bin/python3 \
    && chmod -R a+rX /opt/venv /opt/parallel-rl

# Apptainer runs as the host user with a read-only image: nothing here writes at run time.
RUN useradd --create-home --uid 1000 researcher
USER researcher
WORKDIR /home/researcher
ENV PATH="/opt/venv/bin:${PATH}"

RUN mpirun -n 2 python -c "from mpi4py import MPI; assert MPI.COMM_WORLD.Get_size() == 2"
CMD ["empo-prior", "--help"]
