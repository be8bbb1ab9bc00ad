"""Speed of the streaming pass (collect) for a 4608-latent SAE: wall and CPU time, 1 thread."""
import sys
import time

import torch

from abstopk.analysis.latent_stats import collect
from abstopk.data.cache import ActivationCache
from abstopk.sae import SAE, SAEConfig

torch.set_num_threads(int(sys.argv[2]))
cache = ActivationCache("runs/cache-L6-shard0")
for arch in sys.argv[1].split(","):
    sae = SAE(SAEConfig(d_in=576, d_sae=4608, architecture=arch, k=32 if "topk" in arch else None), seed=0)
    t, c = time.perf_counter(), time.process_time()
    st = collect(sae, cache, max_rows=int(sys.argv[3]))
    dt, dc = time.perf_counter() - t, time.process_time() - c
    print(f"{arch}: {st.rows_read} rows, wall {dt:.1f} s, cpu {dc:.1f} s -> 1M rows: wall {1e6/st.rows_read*dt/60:.1f} min, cpu {1e6/st.rows_read*dc/60:.1f} min", flush=True)
