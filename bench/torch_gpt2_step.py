#!/usr/bin/env python3
"""torch_gpt2_step.py — the PyTorch reference for bench_train_step: the same
GPT-2 (pre-LN, GELU(tanh), tied embeddings, vocab padded to a multiple of
128), the same full training step (forward, backward, global-norm clip to
1.0, AdamW), on random tokens, timed the same way (median over --steps after
--warmup, synchronised per step). PyTorch runs it the way its users would:
bf16 autocast, SDPA (flash) attention, fused AdamW, optionally
torch.compile. Prints one JSON line like bench_train_step's; with
--gml PATH it also runs PATH (bench_train_step) with the same shape and
prints the ratio gml/torch of tokens/s from the one run on one machine.

usage: torch_gpt2_step.py [--device cuda|cpu] [--compile] [--layers 12] [--heads 12]
                          [--width 768] [--context 1024] [--vocab 50257] [--batch 16]
                          [--steps 30] [--warmup 5] [--gml build/bench_train_step]
A benchmark: it prints figures and asserts nothing.
"""
import argparse
import json
import math
import subprocess
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.nh = NH
        self.ln1 = nn.LayerNorm(C)
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C)
        self.fc = nn.Linear(C, 4 * C)
        self.fcp = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.nh, C // self.nh).transpose(1, 2) for t in (q, k, v))
        if hasattr(F, "scaled_dot_product_attention"):  # PyTorch >= 2.0: flash attention on the GPU
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # older CPU builds (Debian 12's 1.13): plain causal attention, for a smoke run only
            att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            att = att.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
            y = att.softmax(-1) @ v
        x = x + self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.fcp(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, NH, C, T, Vp):
        super().__init__()
        self.wte = nn.Embedding(Vp, C)
        self.wpe = nn.Embedding(T, C)
        self.blocks = nn.ModuleList(Block(C, NH) for _ in range(L))
        self.lnf = nn.LayerNorm(C)
        std, pstd = 0.02, 0.02 / math.sqrt(2 * L)
        for n, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, pstd if n.endswith("proj.weight") or n.endswith("fcp.weight") else std)
            elif n.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = F.linear(self.lnf(x), self.wte.weight)  # tied lm head
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compile", action="store_true")
    for k, v in dict(layers=12, heads=12, width=768, context=1024, vocab=50257, batch=16, steps=30,
                     warmup=5).items():
        ap.add_argument("--" + k, type=int, default=v)
    ap.add_argument("--gml", default="")
    a = ap.parse_args()
    dev = torch.device(a.device)
    Vp = (a.vocab + 127) // 128 * 128
    torch.manual_seed(1)
    model = GPT(a.layers, a.heads, a.width, a.context, Vp).to(dev)
    decay = [p for p in model.parameters() if p.dim() == 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if dev.type == "cuda" else {}))
    step_fn = torch.compile(model) if a.compile else model
    amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    times, loss = [], float("nan")
    for s in range(a.warmup + a.steps):
        idx = torch.randint(0, a.vocab, (a.batch, a.context), device=dev)
        tgt = torch.randint(0, a.vocab, (a.batch, a.context), device=dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with amp:
            l = step_fn(idx, tgt)
        l.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss = l.item()  # synchronises, as bench_train_step's loss read-back does
        if s >= a.warmup:
            times.append(time.perf_counter() - t0)
    med = sorted(times)[len(times) // 2]
    tps = a.batch * a.context / med
    nparams = sum(p.numel() for p in model.parameters())
    flops_tok = 6 * nparams + 12 * a.layers * a.context * a.width
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    peak = 989e12 if ("H100" in name or "H200" in name) else 0
    mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else -1
    res = {"bench": "train_step", "system": "pytorch" + ("+compile" if a.compile else ""), "torch": torch.__version__,
           "device": name, "layers": a.layers, "width": a.width, "context": a.context, "batch": a.batch,
           "params": nparams, "ms_per_step": round(med * 1e3, 3), "tokens_per_s": round(tps),
           "mfu": round(flops_tok * tps / peak, 4) if peak else -1, "peak_mem_gib": round(mem, 3),
           "loss": round(loss, 4)}
    print(json.dumps(res), flush=True)
    if a.gml:
        cmd = [a.gml, "--device", a.device] + [x for k in ("layers", "heads", "width", "context", "vocab", "batch",
                                                          "steps", "warmup") for x in ("--" + k, str(getattr(a, k)))]
        g = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(json.dumps(g))
        print(json.dumps({"ratio_gml_over_torch": round(g["tokens_per_s"] / tps, 3)}))


if __name__ == "__main__":
    main()
