"""``reuse_freed_memory``: the ``beckmann`` command keeps freed blocks for its next arrays.

Measured in a fresh interpreter (the setting is per process): the page faults of allocating,
filling and freeing a 64 MB block by ``malloc`` a second time (as C++ and PETSc do; NumPy asks
for transparent huge pages, which hide the effect) are counted with and without the setting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, json, resource, sys
from beckmann._resources import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "on" else False
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def block():  # what C++ and PETSc do with a large std::vector: malloc, fill, free
    p = libc.malloc(64 * 2**20)
    ctypes.memset(p, 1, 64 * 2**20)
    libc.free(p)
block()
before = faults()
block()
print(json.dumps({"applied": applied, "faults": faults() - before}))
"""


def probe(mode: str, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUN"))}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True, env={**base, **env}, timeout=60)  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.serial
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_freed_array_is_reused_without_page_faults():
    off, on = probe("off"), probe("on")
    assert on["applied"] and not off["applied"]
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert off["faults"] > pages // 2  # glibc unmapped the block: faulted in again
    assert on["faults"] < pages // 100  # the same memory, no new pages
    # the user's own malloc tuning, or the opt-out, is left alone
    assert not probe("on", MALLOC_ARENA_MAX="2", MALLOC_TRIM_THRESHOLD_="1")["applied"]
    assert not probe("on", BECKMANN_MALLOC="system")["applied"]
