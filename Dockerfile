# beckmann in a container, installed exactly as the README does it (scripts/dev.sh creates .venv
# and installs the package with the PyPI wheel dolfinx-solver-real: DOLFINx 0.11, PETSc, MPICH).
#
#   docker build -t beckmann .
#   docker run --rm -v "$PWD/runs:/work/beckmann/runs" beckmann \
#       mpirun -n 4 beckmann solve --set mesh.n=256 --out runs/example
#   docker run --rm beckmann bash scripts/dev.sh test
FROM python:3.12-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libgl1 libglu1-mesa libxrender1 libxcursor1 libxft2 libxinerama1 libegl1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /work/beckmann
COPY . .
RUN bash scripts/dev.sh setup

# The venv's mpirun is the wheel's MPICH; keep it ahead of any other MPI on PATH.
ENV PATH="/work/beckmann/.venv/bin:${PATH}" OMP_NUM_THREADS=1
CMD ["beckmann", "solve", "--out", "runs/example"]
