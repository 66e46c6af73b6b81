"""PyTorch eager reference for `cargo bench -p models --bench training_step`.

The same Llama-style model as `models::Llama` (RMSNorm, rotary "rotate half" positions, SwiGLU, causal
attention, untied head, byte vocabulary), trained the same way (AdamW with decoupled weight decay, global
gradient-norm clipping, warm-up then cosine), one step after another on changing batches. It prints
tokens per second per preset in the bench's format, so the two can be read side by side.

    python3 torch_training_step.py [--threads 2] [--presets tiny,small,medium] [--batch 8] [--steps 40]

Only for comparison: PyTorch is not a dependency of the project. Install it in a throw-away environment.
"""

import argparse
import math
import time

import torch
import torch.nn.functional as F

PRESETS = {  # d_model, n_layers, n_heads, d_ff (models::ModelConfig::preset)
    "tiny": (64, 2, 4, 176),
    "small": (128, 4, 4, 352),
    "medium": (384, 6, 6, 1024),
}
VOCAB, MAX_SEQ, EPS = 256, 256, 1e-5


class Block(torch.nn.Module):
    def __init__(self, d, h, f):
        super().__init__()
        self.h = h
        self.attn_norm = torch.nn.Parameter(torch.ones(d))
        self.mlp_norm = torch.nn.Parameter(torch.ones(d))
        self.wq, self.wk, self.wv, self.wo = (torch.nn.Linear(d, d, bias=False) for _ in range(4))
        self.w1, self.w3 = torch.nn.Linear(d, f, bias=False), torch.nn.Linear(d, f, bias=False)
        self.w2 = torch.nn.Linear(f, d, bias=False)

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        h = F.rms_norm(x, (d,), self.attn_norm, EPS)

        def heads(y):
            return y.view(b, t, self.h, d // self.h).transpose(1, 2)

        q, k, v = heads(self.wq(h)), heads(self.wk(h)), heads(self.wv(h))
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.wo(ctx.transpose(1, 2).reshape(b, t, d))
        h = F.rms_norm(x, (d,), self.mlp_norm, EPS)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Llama(torch.nn.Module):
    def __init__(self, d, n_layers, h, f):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, d)
        self.blocks = torch.nn.ModuleList(Block(d, h, f) for _ in range(n_layers))
        self.final_norm = torch.nn.Parameter(torch.ones(d))
        self.head = torch.nn.Linear(d, VOCAB, bias=False)
        dh = d // h
        freqs = 1.0 / (10000.0 ** (torch.arange(0, dh, 2).float() / dh))
        angles = torch.outer(torch.arange(MAX_SEQ).float(), freqs)
        self.register_buffer("cos", angles.cos())
        self.register_buffer("sin", angles.sin())
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)

    def forward(self, ids):
        t = ids.shape[1]
        cos, sin = self.cos[:t], self.sin[:t]
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.head(F.rms_norm(x, (x.shape[-1],), self.final_norm, EPS))


def lr_at(step, lr=3e-3, min_lr=3e-4, warmup=20, total=1000):
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def run(preset, batch, seq, steps, warmup_steps):
    torch.manual_seed(0)
    model = Llama(*PRESETS[preset])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    corpus = torch.randint(0, VOCAB, (1 << 16,))
    times = []
    for step in range(warmup_steps + steps):
        start = time.perf_counter()
        starts = torch.randint(0, corpus.numel() - seq - 1, (batch,))
        window = torch.stack([corpus[s : s + seq + 1] for s in starts.tolist()])
        ids, targets = window[:, :-1], window[:, 1:]
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = F.cross_entropy(model(ids).reshape(-1, VOCAB), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= warmup_steps:
            times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    return median, batch * seq / median


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--presets", default="tiny,small,medium")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for preset in args.presets.split(","):
        median, tokens = run(preset, args.batch, args.seq, args.steps, args.warmup)
        print(f"PYTORCH {preset} eager, {args.threads} threads, {args.batch} x {args.seq}: "
              f"{median * 1e3:.2f} ms per step, {tokens:,.0f} tokens/s (torch {torch.__version__})")


if __name__ == "__main__":
    main()
