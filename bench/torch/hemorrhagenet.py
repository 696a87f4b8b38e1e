"""PyTorch reference of hn-model's HemorrhageNet (crates/hn-model), for benchmarking.

Same layers, sizes, order and initialisation as the Rust network at its defaults:
PyTorch's default Linear/Conv init (kaiming-uniform, bound 1/sqrt(fan_in)) is what burn's
default `KaimingUniform { gain: 1/sqrt(3) }` gives; the custom parameters use the same
distributions as the Rust code (see the comments). Dropout is active in train() mode only;
the MC-dropout path is not part of the benchmark.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

NEIGHBOURS = 11
N_SUBTYPES = 5
N_MRS = 6


def norm_groups(ch):
    return next(g for g in range(min(8, ch), 0, -1) if ch % g == 0)


def region_graph(s, h, w):
    """Same neighbour table as hn_model::RegionGraph: self, 8 in-slice, slice-1, slice+1."""
    idx, valid = [], []
    node = lambda s_, i, j: (s_ * h + i) * w + j
    for si in range(s):
        for i in range(h):
            for j in range(w):
                me = node(si, i, j)
                slots = [me]
                for di in (-1, 0, 1):
                    for dj in (-1, 0, 1):
                        if di == 0 and dj == 0:
                            continue
                        ii, jj = i + di, j + dj
                        slots.append(node(si, ii, jj) if 0 <= ii < h and 0 <= jj < w else None)
                slots.append(node(si - 1, i, j) if si > 0 else None)
                slots.append(node(si + 1, i, j) if si + 1 < s else None)
                for t in slots:
                    idx.append(me if t is None else t)
                    valid.append(t is not None)
    n = s * h * w
    return torch.tensor(idx, dtype=torch.long), ~torch.tensor(valid).view(1, n, NEIGHBOURS, 1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, stride=2):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(norm_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(norm_groups(cout), cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        identity = self.shortcut(x) if self.shortcut is not None else x
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + identity)


class ImageEncoder(nn.Module):
    def __init__(self, cin, widths):
        super().__init__()
        self.stem = nn.Conv2d(cin, widths[0], 3, 2, 1, bias=False)
        self.stem_norm = nn.GroupNorm(norm_groups(widths[0]), widths[0])
        self.blocks = nn.ModuleList(ResBlock(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x):
        x = F.relu(self.stem_norm(self.stem(x)))
        for b in self.blocks:
            x = b(x)
        return x


class GatLayer(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.proj = nn.Linear(d, d, bias=False)
        bound = math.sqrt(6.0 / (self.dh + 1))  # burn XavierUniform(gain 1), fan_in dh, fan_out 1
        self.attn_src = nn.Parameter(torch.empty(heads, self.dh).uniform_(-bound, bound))
        self.attn_dst = nn.Parameter(torch.empty(heads, self.dh).uniform_(-bound, bound))
        self.out = nn.Linear(d, d)
        self.norm1 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, 2 * d)
        self.ff2 = nn.Linear(2 * d, d)
        self.norm2 = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, index, invalid):
        b, n, d = x.shape
        h, dh, k = self.h, self.dh, NEIGHBOURS
        wh = self.proj(x)
        wh4 = wh.view(b, n, h, dh)
        e_dst = (wh4 * self.attn_dst).sum(-1).view(b, n, 1, h)
        e_src = (wh4 * self.attn_src).sum(-1)
        e_src_nb = e_src.index_select(1, index).view(b, n, k, h)
        scores = F.leaky_relu(e_dst + e_src_nb, 0.2).masked_fill(invalid, -1e9)
        alpha = torch.softmax(scores, 2)
        v_nb = wh.index_select(1, index).view(b, n, k, h, dh)
        agg = (alpha.unsqueeze(-1) * v_nb).sum(2).reshape(b, n, d)
        x = self.norm1(x + self.drop(self.out(F.elu(agg))))
        x = self.norm2(x + self.drop(self.ff2(F.gelu(self.ff1(x)))))
        return x, alpha


class GatedAttentionPool(nn.Module):
    def __init__(self, d, a):
        super().__init__()
        self.v, self.u, self.w = nn.Linear(d, a), nn.Linear(d, a), nn.Linear(a, 1)

    def forward(self, x):
        return self.w(torch.tanh(self.v(x)) * torch.sigmoid(self.u(x))).squeeze(-1)


class ClinicalProcessor(nn.Module):
    def __init__(self, f, d, d_gate=32):
        super().__init__()
        std = 1.0 / math.sqrt(d)
        self.weight = nn.Parameter(torch.randn(f, d) * std)
        self.bias = nn.Parameter(torch.zeros(f, d))
        self.missing = nn.Parameter(torch.randn(f, d) * std)
        self.gate1 = nn.Linear(2 * f, d_gate)
        self.gate2 = nn.Linear(d_gate, f)
        nn.init.normal_(self.gate2.weight, 0.0, 0.02)
        nn.init.normal_(self.gate2.bias, 0.0, 0.02)
        self.norm = nn.LayerNorm(d)

    def forward(self, values, present):
        absent = present <= 0.5
        p = (~absent).float()
        v = values.masked_fill(absent, 0.0)
        emb = (v.unsqueeze(-1) * self.weight + self.bias) * p.unsqueeze(-1) + self.missing * (1 - p).unsqueeze(-1)
        gates = torch.sigmoid(self.gate2(F.relu(self.gate1(torch.cat([v, p], 1)))) + 1.0)
        return self.norm(emb) * gates.unsqueeze(-1), gates


class CrossModalFusion(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.h = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.norm = nn.LayerNorm(d)
        self.mix = nn.Linear(2 * d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, tokens, nodes, image):
        b, f, d = tokens.shape
        n = nodes.shape[1]
        h, dh = self.h, d // self.h
        q = self.q(tokens).view(b, f, h, dh).transpose(1, 2)
        k = self.k(nodes).view(b, n, h, dh).transpose(1, 2)
        v = self.v(nodes).view(b, n, h, dh).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(dh), 3)
        ctx = (attn @ v).transpose(1, 2).reshape(b, f, d)
        t = self.norm(tokens + self.drop(self.o(ctx)))
        fused = F.gelu(self.mix(torch.cat([image, t.mean(1)], 1)))
        return self.drop(fused), attn


class Heads(nn.Module):
    def __init__(self, d, dropout):
        super().__init__()
        self.any = nn.Linear(d, 1)
        self.subtype = nn.Linear(d, N_SUBTYPES)
        self.slice = nn.Linear(d, 1 + N_SUBTYPES)
        self.prognosis = nn.Linear(d + 2 * (1 + N_SUBTYPES), d)
        self.mortality = nn.Linear(d, 1)
        self.facts = nn.Linear(d, 3)
        self.mrs_score = nn.Linear(d, 1, bias=False)
        self.mrs_first = nn.Parameter(torch.full((1,), 1.5))
        self.mrs_gaps = nn.Parameter(torch.full((N_MRS - 1,), 0.5))
        self.drop = nn.Dropout(dropout)

    def forward(self, fused, slices):
        x = self.drop(fused)
        any_logit = self.any(x).squeeze(-1)
        sub = self.subtype(x)
        slice_logits = self.slice(self.drop(slices))
        p_any = torch.sigmoid(any_logit).unsqueeze(-1)
        p_sub = torch.sigmoid(sub) * p_any
        sp = torch.sigmoid(slice_logits)
        burden = torch.cat([sp[..., :1], sp[..., 1:] * sp[..., :1]], 2).mean(1)
        z = self.drop(F.gelu(self.prognosis(torch.cat([x, p_any.detach(), p_sub.detach(), burden.detach()], 1))))
        mort = self.mortality(z).squeeze(-1)
        facts = self.facts(z)
        steps = torch.cat([self.mrs_gaps.new_zeros(1), F.softplus(self.mrs_gaps)]).cumsum(0)
        mrs = self.mrs_score(z) + (self.mrs_first - steps)
        return any_logit, sub, slice_logits, mort, mrs, facts


class HemorrhageNet(nn.Module):
    def __init__(self, channels=3, widths=(16, 32, 64, 128), n_heads=4, n_gat_layers=2, n_clinical=16,
                 dropout=0.2, n_modalities=2, d_attn=64):
        super().__init__()
        d = widths[-1]
        self.channels = channels
        self.channel_scale = nn.Parameter(torch.ones(n_modalities, channels))
        self.channel_shift = nn.Parameter(torch.zeros(n_modalities, channels))
        self.modality_embedding = nn.Embedding(n_modalities, d)
        nn.init.normal_(self.modality_embedding.weight, 0.0, 0.02)
        self.encoder = ImageEncoder(channels, list(widths))
        self.gat = nn.ModuleList(GatLayer(d, n_heads, dropout) for _ in range(n_gat_layers))
        self.pool = GatedAttentionPool(d, d_attn)
        self.clinical = ClinicalProcessor(n_clinical, d)
        self.fusion = CrossModalFusion(d, n_heads, dropout)
        self.heads = Heads(d, dropout)
        self._graph = {}

    def forward(self, images, clinical, present, modality):
        b, s, c, hh, ww = images.shape
        x = images * self.channel_scale[modality].view(b, 1, c, 1, 1) + self.channel_shift[modality].view(b, 1, c, 1, 1)
        fmap = self.encoder(x.reshape(b * s, c, hh, ww))
        _, d, h, w = fmap.shape
        n = s * h * w
        nodes = fmap.view(b, s, d, h * w).transpose(2, 3).reshape(b, n, d)
        nodes = nodes + self.modality_embedding(modality).unsqueeze(1)
        key = (s, h, w)
        if key not in self._graph:  # hn-model rebuilds it per call; host cost is negligible
            self._graph[key] = tuple(g.to(images.device) for g in region_graph(s, h, w))
        index, invalid = self._graph[key]
        invalid = invalid.expand(b, n, NEIGHBOURS, self.gat[0].h)
        x = nodes
        for layer in self.gat:
            x, _ = layer(x, index, invalid)
        scores = self.pool(x)
        study_attn = torch.softmax(scores, 1)
        image = (study_attn.unsqueeze(-1) * x).sum(1)
        slice_attn = torch.softmax(scores.view(b, s, h * w), 2)
        slices = (slice_attn.unsqueeze(-1) * x.view(b, s, h * w, d)).sum(2)
        tokens, gates = self.clinical(clinical, present)
        fused, _ = self.fusion(tokens, x, image)
        return self.heads(fused, slices) + (study_attn.view(b, s, h, w), gates)


def masked_bce(logits, targets, mask, pos_weight):
    l = -(targets * pos_weight * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits)) * mask
    return l.sum() / mask.sum().clamp_min(1.0)


class MultiTaskLoss(nn.Module):
    """Kendall et al. 2018 weighting, same terms as hn_model::MultiTaskLoss."""

    def __init__(self, gate_sparsity=1e-3):
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(5))
        self.gate_sparsity = gate_sparsity

    def forward(self, out, t):
        any_logit, sub, slice_logits, mort, mrs, facts, _heat, gates = out
        b, s, _ = slice_logits.shape
        study = masked_bce(any_logit, t["any"], t["study_mask"], 1.0)
        study = study + masked_bce(sub, t["subtypes"], (t["study_mask"] * t["any"]).unsqueeze(1).expand(b, 5), 1.0)
        sm = t["slice_mask"].unsqueeze(-1)
        sa = t["slices"][..., :1]
        slice_ = masked_bce(slice_logits[..., :1], sa, sm, 1.0)
        slice_ = slice_ + masked_bce(slice_logits[..., 1:], t["slices"][..., 1:], (sm * sa).expand(b, s, 5), 1.0)
        mortality = masked_bce(mort, t["mortality"], t["mortality_mask"], 1.0)
        ks = torch.arange(1, 7, dtype=torch.float32, device=mrs.device)
        cum = (t["mrs"].float().unsqueeze(1) >= ks).float()
        mrs_l = masked_bce(mrs, cum, t["mrs_mask"].unsqueeze(1).expand(b, 6), 1.0)
        fm = t["facts_mask"]
        vol = (((facts[:, :2] - t["facts"][:, :2]) ** 2).mean(1) * fm).sum() / fm.sum().clamp_min(1.0)
        facts_l = vol + masked_bce(facts[:, 2], t["facts"][:, 2], fm, 1.0)
        per_task = torch.stack([study, slice_, mortality, mrs_l, facts_l])
        active = torch.stack([t["study_mask"].sum(), t["slice_mask"].sum(), t["mortality_mask"].sum(),
                              t["mrs_mask"].sum(), fm.sum()]).clamp_max(1.0)
        total = ((torch.exp(-self.log_vars) * per_task + 0.5 * self.log_vars) * active).sum()
        return total + self.gate_sparsity * gates.mean(), per_task
