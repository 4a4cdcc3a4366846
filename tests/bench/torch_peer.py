"""PyTorch peer for fp8d-bench: the same Llama shape trained with torch.compile in BF16.

FP32 master weights under bf16 autocast, fused AdamW, SDPA flash attention (causal, GQA),
tied embeddings: the configuration fp8d's BF16 engine computes. Prints the same fields as
fp8d-bench so the two can be compared line by line.

    python3 tests/bench/torch_peer.py                  # 124m B16xT1024 and 1b B8xT2048
    python3 tests/bench/torch_peer.py --model 1b --steps 20
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {  # n_layer, d_model, n_head, n_kv_head, d_ff, vocab
    "124m": (12, 768, 12, 12, 2048, 50304),
    "1b": (16, 2048, 32, 8, 8192, 50304),
}
PEAK_BF16_TFLOPS = 989.0


class Block(nn.Module):
    def __init__(self, d, h, kv, ff, rope):
        super().__init__()
        self.h, self.kv, self.hd = h, kv, d // h
        self.ln1 = nn.RMSNorm(d, eps=1e-5)
        self.qkv = nn.Linear(d, d + 2 * kv * self.hd, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.ln2 = nn.RMSNorm(d, eps=1e-5)
        self.gate_up = nn.Linear(d, 2 * ff, bias=False)
        self.down = nn.Linear(ff, d, bias=False)
        self.rope = rope

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split([d, self.kv * self.hd, self.kv * self.hd], dim=-1)
        q = q.view(b, t, self.h, self.hd)
        k = k.view(b, t, self.kv, self.hd)
        v = v.view(b, t, self.kv, self.hd).transpose(1, 2)
        cos, sin = self.rope
        q, k = rotate(q, cos[:t], sin[:t]).transpose(1, 2), rotate(k, cos[:t], sin[:t]).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        g, u = self.gate_up(self.ln2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(g) * u)


def rotate(x, cos, sin):  # interleaved pairs, as fp8d's RoPE
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2)


class Llama(nn.Module):
    def __init__(self, L, d, h, kv, ff, vocab, max_t):
        super().__init__()
        hd = d // h
        inv = 10000.0 ** (-torch.arange(0, hd, 2).float() / hd)
        ang = torch.arange(max_t).float()[:, None] * inv[None, :]
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, h, kv, ff, (self.cos, self.sin)) for _ in range(L))
        self.norm = nn.RMSNorm(d, eps=1e-5)

    def forward(self, idx, targets):
        x = self.embed(idx)
        for blk in self.blocks:
            x = blk(x)
        logits = F.linear(self.norm(x), self.embed.weight)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


def run(name, batch, seq, steps, warmup):
    L, d, h, kv, ff, vocab = PRESETS[name]
    model = Llama(L, d, h, kv, ff, vocab, seq).cuda()
    for blk in model.blocks:  # rebind RoPE tables moved to the GPU
        blk.rope = (model.cos, model.sin)
    # fp8d's initialisation: N(0, 0.02), output projections scaled by 1/sqrt(2L), norms 1.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 2:
                out_proj = n.endswith("o.weight") or n.endswith("down.weight")
                p.normal_(0.0, 0.02 / math.sqrt(2 * L) if out_proj else 0.02)
    n_matmul = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    step_fn = torch.compile(model)
    idx = torch.randint(0, vocab, (batch, seq), device="cuda")
    tgt = torch.randint(0, vocab, (batch, seq), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    for s in range(warmup + steps):
        if s == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_fn(idx, tgt)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    tok_s = batch * seq * steps / secs
    flops_per_token = 6.0 * n_matmul + 6.0 * L * seq * d  # same count as fp8d-bench
    tflops = tok_s * flops_per_token / 1e12
    print(f"peer model={name} torch={torch.__version__} compile=yes batch={batch} seq={seq} "
          f"gpu=\"{torch.cuda.get_device_name()}\" steps={steps} warmup={warmup}\n"
          f"  step_time_ms={1e3 * secs / steps:.2f} tokens_per_s={tok_s:.0f} "
          f"model_tflops={tflops:.1f} mfu={100 * tflops / PEAK_BF16_TFLOPS:.1f}% "
          f"peak_mem_gib={torch.cuda.max_memory_allocated() / 2**30:.2f} loss={loss.item():.4f}",
          flush=True)
    del model, opt, step_fn
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    cases = [(a.model, a.batch or 16, a.seq or 1024)] if a.model else [("124m", 16, 1024), ("1b", 8, 2048)]
    for name, b, t in cases:
        run(name, b, t, a.steps, a.warmup)


if __name__ == "__main__":
    main()
