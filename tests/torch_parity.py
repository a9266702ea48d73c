"""torch_parity.py — an independent PyTorch GPT-2 (pre-LN, tanh GELU, tied
embeddings, causal attention) run on the weights and batch that
tests/parity_dump.c wrote; checks our loss and every parameter gradient.

usage: python3 torch_parity.py DUMP.h5
Bound: relative error ||ours - torch|| / ||torch|| <= 1e-5 per tensor, against
PyTorch in float32 and in float64.

Dropout (attributes dropout > 0, dropout_key): the masks are redrawn here in
numpy from the hash that core/dropout.h specifies, and applied where the
model applies them (embedding output, attention and MLP branch outputs).
"""
import math
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

TOL = 1e-5


M64 = (1 << 64) - 1


def mix64(z):
    """splitmix64's finaliser on a uint64 numpy array (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def dropout_mask(step_key, site, shape, p):
    """Float mask (0 or 1/(1-p)) of one site, flat index order of `shape`."""
    site_key = mix64(np.uint64(step_key) ^ mix64(np.uint64(site + 0x44524F50)))
    i = np.arange(1, int(np.prod(shape)) + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        bits = mix64(site_key + i * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
    thr = min(int(p * 4294967296.0), 4294967295)
    keep = bits >= np.uint64(thr)
    return torch.from_numpy(np.where(keep, 1.0 / np.float32(1.0 - p), 0.0).reshape(shape))


def gpt_loss(P, idx, tgt, cfg, drop=None):
    L, NH, C, V = cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["vocab_size"]
    B, T = idx.shape
    hd = C // NH
    # drop(site, tensor): identity without dropout
    d = drop or (lambda site, t: t)
    x = d(0, P["wte.weight"][idx] + P["wpe.weight"][:T])
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(L):
        g = lambda n: P[f"blocks.{l}.{n}"]
        h = F.layer_norm(x, (C,), g("ln1.weight"), g("ln1.bias"), eps=1e-5)
        qkv = h @ g("attn.qkv.weight").T + g("attn.qkv.bias")
        q, k, v = qkv.split(C, dim=2)
        q, k, v = (t.view(B, T, NH, hd).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + d(1 + 2 * l, y @ g("attn.proj.weight").T + g("attn.proj.bias"))
        h = F.layer_norm(x, (C,), g("ln2.weight"), g("ln2.bias"), eps=1e-5)
        f = F.gelu(h @ g("mlp.fc.weight").T + g("mlp.fc.bias"), approximate="tanh")
        x = x + d(2 + 2 * l, f @ g("mlp.proj.weight").T + g("mlp.proj.bias"))
    x = F.layer_norm(x, (C,), P["ln_f.weight"], P["ln_f.bias"], eps=1e-5)
    logits = x @ P["wte.weight"].T
    return F.cross_entropy(logits[:, :, :V].reshape(B * T, V), tgt.reshape(B * T))


def rel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    nb = np.linalg.norm(b)
    return np.linalg.norm(a - b) / (nb if nb > 0 else 1.0)


def main(path):
    f = h5py.File(path, "r")
    cfg = {k: int(f.attrs[k]) for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")}
    # parameter names contain dots; they are flat dataset names at the root
    names = [n for n in f.keys() if isinstance(f[n], h5py.Dataset) and n not in ("inputs", "targets", "loss")]
    idx = torch.from_numpy(f["inputs"][...].astype(np.int64))
    tgt = torch.from_numpy(f["targets"][...].astype(np.int64))
    ours_loss = float(f["loss"][()])
    p = float(f.attrs.get("dropout", 0.0))
    drop = None
    if p > 0:
        key = int(f.attrs["dropout_key"])
        drop = lambda site, t: t * dropout_mask(key, site, tuple(t.shape), p).to(t.dtype)
        print(f"dropout p={p} key={key:#x}: masks redrawn in numpy")
    worst = 0.0
    for dtype in (torch.float32, torch.float64):
        P = {n: torch.tensor(f[n][...], dtype=dtype, requires_grad=True) for n in names}
        loss = gpt_loss(P, idx, tgt, cfg, drop)
        loss.backward()
        e = abs(ours_loss - loss.item()) / abs(loss.item())
        print(f"[{dtype}] loss ours {ours_loss:.7f} torch {loss.item():.7f} rel {e:.2e}")
        assert e <= TOL, f"loss differs: rel {e:.3e} > {TOL}"
        for n in names:
            g = P[n].grad
            assert g is not None, n
            e = rel(f["grads"][n][...], g.numpy())
            worst = max(worst, e)
            assert e <= TOL, f"[{dtype}] grad {n}: rel {e:.3e} > {TOL}"
        print(f"[{dtype}] {len(names)} gradients match; worst rel {worst:.2e}")
    print(f"PARITY OK{' (dropout %g)' % p if p > 0 else ''}: loss and {len(names)} parameter gradients within {TOL}")


if __name__ == "__main__":
    main(sys.argv[1])
