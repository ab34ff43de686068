"""`python -m analysis <sweep_dir>` is `python -m analysis.report <sweep_dir>`."""

import sys

from analysis import report

sys.exit(report.main())
