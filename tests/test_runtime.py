"""stability/runtime.py and host_memory.py: process-wide settings of the entry points."""

import platform
import subprocess
import sys

import pytest

from stability import host_memory
from stability import runtime

GLIBC = platform.libc_ver()[0] == "glibc"

# Allocates and frees a 64 MB array five times; prints the page faults of the last four.
FAULTS = """
import resource, sys
import numpy as np
from stability import host_memory
if sys.argv[1] == "keep":
  assert host_memory.keep_freed_memory()
np.ones(8 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
  np.ones(8 << 20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
  out = subprocess.run([sys.executable, "-c", FAULTS, mode], check=True, capture_output=True,
                       text=True)
  return int(out.stdout)


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt")
def test_kept_memory_is_reused_without_faulting_its_pages_in_again():
  released, kept = faults("release"), faults("keep")
  # glibc unmaps each freed 64 MB block, so every allocation faults its pages in again (fewer
  # faults where numpy gets transparent huge pages, 4·16k with 4 KB pages); kept, they stay.
  assert released > 100
  assert kept < released / 10


def test_accelerators_leave_malloc_alone(monkeypatch):
  def refuse():
    raise AssertionError("mallopt called off the CPU backend")
  monkeypatch.setattr(host_memory, "keep_freed_memory", refuse)
  monkeypatch.setattr(runtime.jax, "default_backend", lambda: "gpu")
  assert runtime.keep_freed_host_memory() is False
