"""Train-step and inference timing of the PyTorch reference, same protocol as
`cargo run --release -p hn-model --example bench`.

    python bench/torch/bench.py [batch] [slices] [size] [iters] [threads]

`HN_WIDTHS=32,64,128,192,256` sets the CNN widths (as the Rust bench; default: the CPU default).
`HN_TORCH_DEVICE=cuda` runs on GPU 0 (synchronising before each clock read). Each line also
carries `first_ms`, the first (cold) iteration.
"""

import json
import os
import sys
import time

import torch

from hemorrhagenet import HemorrhageNet, MultiTaskLoss


def arg(i, default):
    return int(sys.argv[i]) if len(sys.argv) > i else default


def main():
    b, s, size, iters, threads = arg(1, 2), arg(2, 24), arg(3, 128), arg(4, 5), arg(5, 2)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    dev = torch.device(os.environ.get("HN_TORCH_DEVICE", "cpu"))

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    c, f = 3, 16
    shape = f"{b}x{s}x{c}x{size}x{size}"
    n = b * s * c * size * size
    images = (torch.arange(n, dtype=torch.int64) * 2654435761 % 1000).float().div(1000).view(b, s, c, size, size)
    clinical = (torch.arange(b * f) % 7).float().div(7).sub(0.5).view(b, f)
    present = torch.ones(b, f)
    modality = torch.zeros(b, dtype=torch.long)
    even = (torch.arange(b) % 2 == 0).float()
    sub = torch.zeros(b, 5)
    sub[:, 0] = even
    slices = torch.zeros(b, s, 6)
    slices[:, :, 0] = even.unsqueeze(1)
    slices[:, :, 1] = even.unsqueeze(1)
    t = dict(any=even, subtypes=sub, study_mask=torch.ones(b), slices=slices, slice_mask=torch.ones(b, s),
             mortality=even, mortality_mask=torch.ones(b), mrs=torch.full((b,), 3), mrs_mask=torch.ones(b),
             # ln(1 + 20 mL) / ln(101) on even studies, as examples/bench.rs
             facts=torch.stack([even * torch.log1p(torch.tensor(20.0)) / torch.log(torch.tensor(101.0)), torch.zeros(b), torch.zeros(b)], 1),
             facts_mask=torch.ones(b))
    images, clinical, present, modality = (x.to(dev) for x in (images, clinical, present, modality))
    t = {k: v.to(dev) for k, v in t.items()}

    widths = tuple(int(v) for v in os.environ.get("HN_WIDTHS", "16,32,64,128").split(","))
    model = HemorrhageNet(channels=c, widths=widths).to(dev)
    loss_fn = MultiTaskLoss().to(dev)
    params = list(model.parameters()) + list(loss_fn.parameters())
    # burn's AdamWConfig defaults: betas (0.9, 0.999), eps 1e-5, weight decay 1e-4.
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-5, weight_decay=1e-4)
    model.train()
    times = []
    first = cold = 0.0
    for i in range(iters + 2):
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total, _ = loss_fn(model(images, clinical, present, modality), t)
        total.backward()
        opt.step()
        sync()
        ms = (time.perf_counter() - t0) * 1e3
        if i == 0:
            first, cold = ms, (time.perf_counter() - started) * 1e3
        if i >= 2:
            times.append(ms)
    times.sort()
    nparams = sum(p.numel() for p in model.parameters())
    print(json.dumps(dict(impl=f"torch-{torch.__version__}", what="train_step", shape=shape, threads=str(threads),
                          median_ms=round(times[len(times) // 2], 1), min_ms=round(times[0], 1),
                          first_ms=round(first, 1), process_to_first_step_ms=round(cold, 1), params=nparams)))

    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(iters + 2):
            sync()
            t0 = time.perf_counter()
            out = model(images, clinical, present, modality)
            torch.sigmoid(out[0]).cpu().numpy()
            ms = (time.perf_counter() - t0) * 1e3
            if i == 0:
                first = ms
            if i >= 2:
                times.append(ms)
    times.sort()
    print(json.dumps(dict(impl=f"torch-{torch.__version__}", what="inference", shape=shape, threads=str(threads),
                          median_ms=round(times[len(times) // 2], 1), min_ms=round(times[0], 1),
                          first_ms=round(first, 1))))


if __name__ == "__main__":
    main()
