"""Loads the weights exported by `cargo run -p hn-model --example export_reference -- FILE`
into the PyTorch reference, runs the same input and compares every output, then the gradient
of a fixed weighted sum of the outputs with respect to every parameter (burn's autodiff
against PyTorch's autograd, both in f32).

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
        any_logit, sub, slices, mort, mrs, facts, heat, gates = model(images, clinical, present, modality)
    worst = 0.0
    for name, got in [("any_logit", any_logit), ("subtype_cond_logits", sub), ("slice_logits", slices),
                      ("mortality_logit", mort), ("mrs_logits", mrs), ("facts", facts), ("heatmap", heat),
                      ("feature_gates", gates)]:
        want = torch.tensor(ref[name]).view(-1)
        diff = (got.reshape(-1) - want).abs().max().item()
        scale = want.abs().max().item()
        worst = max(worst, diff / max(scale, 1e-6))
        print(f"{name:22s} max |torch - burn| = {diff:.2e}  (max |value| {scale:.3f})")
    print(f"{len(assigned)} parameter tensors loaded; worst relative difference {worst:.2e}")

    # Backward: the same scalar as export_reference.rs, sum_k w_k * out_k per output.
    def weighted_sum(t):
        n = t.numel()
        k = torch.arange(n)
        w = ((7 * k + 3) % 11).float() / 11.0 - 0.5
        return (t.reshape(-1) * w).sum()

    model.zero_grad()
    any_logit, sub, slices, mort, mrs, facts, heat, gates = model(images, clinical, present, modality)
    objective = (weighted_sum(any_logit) + weighted_sum(sub) + weighted_sum(slices) + weighted_sum(mort)
                 + weighted_sum(mrs) + weighted_sum(facts) + weighted_sum(heat) * 100.0 + weighted_sum(gates))
    objective.backward()
    worst_grad, worst_name, compared = 0.0, "", 0
    # Gradients that are zero in exact arithmetic (e.g. a bias before a softmax, which is
    # shift-invariant) are rounding noise on both sides: compare them against the largest
    # gradient of the model instead of their own size.
    floor = 1e-3 * max(max(abs(v) for v in g) for g in ref["grads"].values())
    for name, g in ref["grads"].items():
        tname = name.replace(".gamma", ".weight").replace(".beta", ".bias")
        p = params[tname]
        want = torch.tensor(g, dtype=torch.float32).view(ref["params"][name]["shape"])
        if tname in linear_weights:
            want = want.t()
        got = p.grad if p.grad is not None else torch.zeros_like(p)
        # Relative to the tensor's largest gradient (tiny entries compare absolutely).
        rel = (got - want).abs().max().item() / max(want.abs().max().item(), floor)
        if "-v" in sys.argv:
            print(f"  {tname:40s} max|g| {want.abs().max().item():.2e}  max|diff| {(got - want).abs().max().item():.2e}")
        compared += 1
        if rel > worst_grad:
            worst_grad, worst_name = rel, tname
    print(f"gradients of {compared} parameter tensors: worst relative difference {worst_grad:.2e} ({worst_name})")
    sys.exit(0 if worst < 1e-3 and worst_grad < 1e-3 else 1)


if __name__ == "__main__":
    main()
