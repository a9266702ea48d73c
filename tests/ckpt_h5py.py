"""ckpt_h5py.py — a gml-dist checkpoint read with plain h5py: its layout, its
manifest (parsed with protobuf's wire format by hand: no generated Python
code), and a parameter checked against the model.h5 the same run wrote.

usage: ckpt_h5py.py GML_BINARY WORKDIR
"""
import os
import subprocess
import sys

import h5py
import numpy as np


def varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return v, i


def top_fields(b):
    """field number -> list of values (ints or bytes) of a protobuf message."""
    out, i = {}, 0
    while i < len(b):
        key, i = varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 2:
            n, i = varint(b, i)
            v, i = bytes(b[i:i + n]), i + n
        elif wt == 5:
            v, i = bytes(b[i:i + 4]), i + 4
        elif wt == 1:
            v, i = bytes(b[i:i + 8]), i + 8
        else:
            raise ValueError(f"wire type {wt}")
        out.setdefault(num, []).append(v)
    return out


def main(binary, work):
    os.makedirs(work, exist_ok=True)
    text = os.path.join(work, "t.txt")
    with open(text, "w") as f:
        f.write(("the quick brown fox jumps over the lazy dog. " * 800))
    subprocess.run([binary, "prep", "--tokenizer", "char", "--out", f"{work}/d.h5", text], check=True,
                   stdout=subprocess.DEVNULL)
    cfg = os.path.join(work, "r.yaml")
    with open(cfg, "w") as f:
        f.write(f"model: {{n_layer: 1, n_head: 2, n_embd: 16, block_size: 16}}\n"
                f"data: {{path: {work}/d.h5, batch_size: 2}}\n"
                f"train: {{steps: 6, device: cpu, out_dir: {work}/run}}\n"
                "eval: {every: 0, batches: 1}\nlog: {every: 1, tensorboard: false}\nsample: {tokens: 0}\n"
                "checkpoint: {every_steps: 3}\n")
    subprocess.run([binary, cfg], check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"))
    ck = os.path.join(work, "run", "ckpt")
    latest = open(os.path.join(ck, "latest")).read().strip()
    assert latest == "step_00000006", latest
    f = h5py.File(os.path.join(ck, latest, "state.h5"), "r")
    assert f.attrs["format"].decode() if isinstance(f.attrs["format"], bytes) else f.attrs["format"] == "gml-checkpoint"
    assert int(f.attrs["step"]) == 6
    assert set(f.keys()) >= {"params", "adam_m", "adam_v", "manifest", "config"}, list(f.keys())
    man = top_fields(f["manifest"][...].tobytes())
    assert man[1][0] == b"gml-checkpoint" and man[4][0] == 6, man.get(4)
    names = [top_fields(t)[2][0].decode() for t in man[16]]
    assert len(names) == 3 * len(f["params"]), (len(names), len(f["params"]))
    model = h5py.File(os.path.join(work, "run", "model.h5"), "r")
    for name in ("wte.weight", "blocks.0.mlp.fc.weight", "ln_f.bias"):
        a, b = f["params"][name][...], model[name][...]
        assert a.dtype == np.float32 and a.shape == b.shape and np.array_equal(a, b), name
    assert np.all(f["adam_v"]["wte.weight"][...] >= 0)
    # ckpt export: plain weights equal to the checkpoint's params, usable by sample
    exported = os.path.join(work, "exported.h5")
    subprocess.run([binary, "ckpt", "export", ck, exported], check=True, stdout=subprocess.DEVNULL)
    e = h5py.File(exported, "r")
    for name in f["params"]:
        assert np.array_equal(e[name][...], f["params"][name][...]), name
    s = subprocess.run([binary, "sample", cfg, "--weights", exported, "--prompt", "the ", "--tokens", "20"],
                       check=True, capture_output=True, text=True)
    assert s.stdout.startswith("the "), s.stdout
    print(f"CKPT H5PY OK: {latest}, {len(f['params'])} parameters; params equal model.h5 and the ckpt export; "
          f"manifest lists {len(names)} tensors")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
