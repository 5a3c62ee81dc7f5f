import os
import tempfile

os.environ.setdefault("MPLBACKEND", "Agg")
# Value priors are built afresh in every test session: a user's cache (~/.cache/jfbgym) would
# hide a change in how they are built.
os.environ["JFBGYM_CACHE_DIR"] = tempfile.mkdtemp(prefix="jfbgym-test-cache-")

import torch

# One intra-op thread: the test workloads are small batched ops that gain nothing from more,
# results do not depend on the machine's core count, and oversubscribed cores (CI beside other
# jobs) made two-thread BLAS spin up to 100x slower here.
torch.set_num_threads(1)
