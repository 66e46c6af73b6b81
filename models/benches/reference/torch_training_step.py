"""PyTorch eager reference for `cargo bench -p models --bench training_step`.

The same Llama-style model as `models::Llama` (RMSNorm, rotary "rotate half" positions, SwiGLU, causal
attention, untied head, byte vocabulary), trained the same way (AdamW with decoupled weight decay, global
gradient-norm clipping, warm-up then cosine), one step after another on changing batches. It prints
tokens per second per preset in the bench's format, so the two can be read side by side.

    python3 torch_training_step.py [--threads 2] [--presets tiny,small,medium] [--batch 8] [--steps 40]
    python3 torch_training_step.py --device cuda [--bf16] --presets paper --batch 2 --seq 1024

`paper` is NoLoCo's smallest model (width 768, 12 blocks of 12 heads, feed-forward 3,072; ~113M parameters
with the byte vocabulary). On a GPU, `--bf16` trains under bf16 autocast (fp32 weights and optimizer state),
as swarmlab's `precision = "bf16"` does; TF32 stays off, as in swarmlab's fp32.

With --serve it builds every preset's model and optimizer, prints READY, then answers each line
`STEP <preset> <n>` on its standard input with `TIMES <preset> <seconds> ...`: the time of each of the next
n steps of that preset. The bench uses it to take PyTorch's steps in turn with its own, in rounds, so
that both see the same machine.

Only for comparison: PyTorch is not a dependency of the project. Install it in a throw-away environment.
"""

import argparse
import math
import sys
import time

import torch
import torch.nn.functional as F

PRESETS = {  # d_model, n_layers, n_heads, d_ff (models::ModelConfig::preset)
    "tiny": (64, 2, 4, 176),
    "small": (128, 4, 4, 352),
    "medium": (384, 6, 6, 1024),
    "large": (640, 10, 10, 1728),
    "paper": (768, 12, 12, 3072),
}
VOCAB, EPS = 256, 1e-5


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
    def __init__(self, d, n_layers, h, f, max_seq):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, d)
        self.blocks = torch.nn.ModuleList(Block(d, h, f) for _ in range(n_layers))
        self.final_norm = torch.nn.Parameter(torch.ones(d))
        self.head = torch.nn.Linear(d, VOCAB, bias=False)
        dh = d // h
        freqs = 1.0 / (10000.0 ** (torch.arange(0, dh, 2).float() / dh))
        angles = torch.outer(torch.arange(max_seq).float(), freqs)
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


class Trainer:
    """One preset's model and optimizer, taking steps one after another on changing batches."""

    def __init__(self, preset, batch, seq, device="cpu", bf16=False):
        torch.manual_seed(0)
        self.device = torch.device(device)
        self.model = Llama(*PRESETS[preset], max(seq, 256)).to(self.device)
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01
        )
        self.corpus = torch.randint(0, VOCAB, (max(1 << 16, 64 * seq),))
        self.batch, self.seq, self.steps, self.bf16 = batch, seq, 0, bf16

    def step(self):
        """One training step on the next batch; returns its wall time in seconds."""
        start = time.perf_counter()
        seq = self.seq
        starts = torch.randint(0, self.corpus.numel() - seq - 1, (self.batch,))
        window = torch.stack([self.corpus[s : s + seq + 1] for s in starts.tolist()])
        ids, targets = window[:, :-1].to(self.device), window[:, 1:].to(self.device)
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.steps)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(ids)
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), targets.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.steps += 1
        return time.perf_counter() - start


def run(preset, batch, seq, steps, warmup_steps, device, bf16):
    trainer = Trainer(preset, batch, seq, device, bf16)
    for _ in range(warmup_steps):
        trainer.step()
    times = sorted(trainer.step() for _ in range(steps))
    median = times[len(times) // 2]
    return median, batch * seq / median


def serve(presets, batch, seq, device, bf16):
    trainers = {preset: Trainer(preset, batch, seq, device, bf16) for preset in presets}
    print(f"READY torch {torch.__version__}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if len(words) != 3 or words[0] != "STEP" or words[1] not in trainers or not words[2].isdigit():
            print(f"ERROR expected `STEP <preset> <n>` with a preset of {sorted(trainers)}, got {line!r}", flush=True)
            continue
        times = [trainers[words[1]].step() for _ in range(int(words[2]))]
        print("TIMES " + words[1] + "".join(f" {t:.6f}" for t in times), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--presets", default="tiny,small,medium")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--serve", action="store_true", help="take steps when asked on standard input")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 weights and optimizer state)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.serve:
        serve(args.presets.split(","), args.batch, args.seq, args.device, args.bf16)
        return
    where = f"{args.device}, {'bf16 autocast' if args.bf16 else 'fp32'}"
    for preset in args.presets.split(","):
        median, tokens = run(preset, args.batch, args.seq, args.steps, args.warmup, args.device, args.bf16)
        print(f"PYTORCH {preset} eager, {where}, {args.threads} threads, {args.batch} x {args.seq}: "
              f"{median * 1e3:.2f} ms per step, {tokens:,.0f} tokens/s (torch {torch.__version__})")


if __name__ == "__main__":
    main()
