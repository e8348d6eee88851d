"""``python -m benchmarks.dense_vs_sparse``: see :mod:`benchmarks.dense_vs_sparse`."""

import sys

from benchmarks.dense_vs_sparse.cli import main

sys.exit(main())
