"""Loads the weights exported by `cargo run -p hn-model --example export_reference -- FILE`
into the PyTorch reference, runs the same input and compares every output.

    python bench/torch/check_equivalence.py /tmp/hn_reference.json

Name mapping: burn's norm `gamma`/`beta` are PyTorch's `weight`/`bias`; burn stores Linear
weights as [in, out], PyTorch as [out, in] (transposed here). Every PyTorch parameter must be
assigned exactly once.
"""

import json
import sys

import torch

from hemorrhagenet import HemorrhageNet


def main():
    ref = json.load(open(sys.argv[1] if len(sys.argv) > 1 else "/tmp/hn_reference.json"))
    model = HemorrhageNet()
    params = dict(model.named_parameters())
    linear_weights = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assigned = set()
    with torch.no_grad():
        for name, p in ref["params"].items():
            tname = name.replace(".gamma", ".weight").replace(".beta", ".bias")
            t = torch.tensor(p["data"], dtype=torch.float32).view(p["shape"])
            target = params[tname]
            if tname in linear_weights:
                t = t.t()
            assert t.shape == target.shape, (tname, t.shape, target.shape)
            target.copy_(t)
            assigned.add(tname)
    missing = set(params) - assigned
    assert not missing, f"not assigned: {missing}"
    b, s, c, h, w = ref["shape"]
    images = torch.tensor(ref["images"]).view(b, s, c, h, w)
    clinical = torch.tensor(ref["clinical"]).view(b, -1)
    present = torch.tensor(ref["present"]).view(b, -1)
    modality = torch.tensor(ref["modality"], dtype=torch.long)
    model.eval()
    with torch.no_grad():
        any_logit, sub, slices, mort, mrs, heat, gates = model(images, clinical, present, modality)
    worst = 0.0
    for name, got in [("any_logit", any_logit), ("subtype_cond_logits", sub), ("slice_logits", slices),
                      ("mortality_logit", mort), ("mrs_logits", mrs), ("heatmap", heat), ("feature_gates", gates)]:
        want = torch.tensor(ref[name]).view(-1)
        diff = (got.reshape(-1) - want).abs().max().item()
        scale = want.abs().max().item()
        worst = max(worst, diff / max(scale, 1e-6))
        print(f"{name:22s} max |torch - burn| = {diff:.2e}  (max |value| {scale:.3f})")
    print(f"{len(assigned)} parameter tensors loaded; worst relative difference {worst:.2e}")
    sys.exit(0 if worst < 1e-3 else 1)


if __name__ == "__main__":
    main()
