"""glibc's malloc set to keep freed host memory, so that a CPU step reuses its buffers.

XLA:CPU (and PyTorch on a CPU) allocates each step's temporaries afresh. By default glibc maps
blocks over its mmap threshold straight from the kernel and unmaps them when they are freed, so
every step faults their pages in again: at d64-L2 and 16 x 128 tokens, three in four of the
process's page faults and about a fifth of the step (docs/performance.md). Serving large blocks
from the heap and never trimming it removes that; the arithmetic is unchanged. The cost is a
process that keeps its peak heap (720 vs 690 MB there). No JAX here: the PyTorch reference's
process calls it too.
"""

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
_KEEP_BYTES = 2**31 - 1  # the largest value mallopt's int takes


def keep_freed_memory() -> bool:
  """Large blocks from the heap, and the heap never trimmed; whether the C library took it
  (False without glibc's mallopt, e.g. on macOS)."""
  try:
    mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
  except (OSError, AttributeError):
    return False
  return all([mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES), mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)])
