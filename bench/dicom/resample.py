"""PyTorch peer of crates/hn-imaging/examples/bench_resample.rs: the same 512 x 512 x 192
volume shrunk to 128 x 128 x 24 with torch.nn.functional.interpolate, mode "area" (adaptive
average pooling; MONAI's default for Resize) and "trilinear" (align_corners=False).

    python bench/dicom/resample.py ITERATIONS THREADS   -> one JSON line per mode
"""

import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def main():
    iters, threads = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(threads)
    k, j, i = np.meshgrid(np.arange(192), np.arange(512), np.arange(512), indexing="ij")
    vol = torch.from_numpy((((7 * i + 13 * j + 29 * k) % 1000) - 500).astype(np.float32))
    x = vol[None, None]
    for mode in ["area", "trilinear"]:
        kw = {} if mode == "area" else {"align_corners": False}
        best = float("inf")
        for _ in range(max(iters, 1)):
            t = time.perf_counter()
            out = F.interpolate(x, size=(24, 128, 128), mode=mode, **kw)
            best = min(best, (time.perf_counter() - t) * 1e3)
        print(json.dumps({"impl": f"torch {torch.__version__} {mode}", "threads": threads,
                          "ms": round(best, 1), "mean": round(out.double().mean().item(), 4)}))


if __name__ == "__main__":
    main()
