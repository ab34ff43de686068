"""Prints the CPUs this process may run on (for tests/test_workers.py)."""
import os
import sys

print(sorted(os.sched_getaffinity(0)), sys.argv[1:])
