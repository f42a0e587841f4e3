"""The `photos` command line (``jobs.cli``).

Importing this package sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set) before anything
imports PyTorch, whose OpenMP threads otherwise spin while they wait for each other. On a
machine whose cores are busy (decode tasks beside a model, other jobs, a CI runner) a
spinning thread burns the time slice the thread it waits for needs: EfficientNet-Lite0
took 3.3 s per batch of 4 with 2 threads spinning and 0.05 s with them sleeping, on this
project's 2-core machine under a load of 9 (`benchmarks/startup.py` has the end-to-end
figures). Ray workers that a local Ray starts inherit it.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
