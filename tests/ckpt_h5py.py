"""ckpt_h5py.py — gml-dist checkpoints read with plain h5py: the layout, the
manifest (parsed with protobuf's wire format by hand: no generated Python
code), and parameters checked against the model.h5 the same run wrote.
  - one process: state.h5 and its one rank file;
  - dp=2 (mpiexec): one file per rank, the tensors of state.h5 virtual
    datasets over both (a parameter straddles them, a mapping starts
    mid-row), read from another working directory, and again after the
    checkpoint directory was renamed; equal to model.h5 and `ckpt export`.

usage: ckpt_h5py.py GML_BINARY WORKDIR MPIEXEC
"""
import os
import shutil
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


def attr_str(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def check_top(path, step, ranks):
    """state.h5: attributes, groups, manifest; returns (file, tensor names)."""
    f = h5py.File(path, "r")
    assert attr_str(f.attrs["format"]) == "gml-checkpoint", f.attrs["format"]
    assert int(f.attrs["format_version"]) == 2 and int(f.attrs["step"]) == step
    assert set(f.keys()) >= {"params", "adam_m", "adam_v", "manifest", "config"}, list(f.keys())
    man = top_fields(f["manifest"][...].tobytes())
    assert man[1][0] == b"gml-checkpoint" and man[4][0] == step, man.get(4)
    names = [top_fields(t)[2][0].decode() for t in man[16]]
    assert len(names) == 3 * len(f["params"]), (len(names), len(f["params"]))
    files = [top_fields(r)[2][0].decode() for r in man[17]]  # RankFile.file
    assert files == [f"rank_{r:05d}.h5" for r in range(ranks)], files
    return f, names


def run(cmd, **kw):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"), **kw)


def main(binary, work, mpiexec):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    text = os.path.join(work, "t.txt")
    with open(text, "w") as f:
        f.write(("the quick brown fox jumps over the lazy dog. " * 800))
    run([binary, "prep", "--tokenizer", "char", "--out", f"{work}/d.h5", text])
    cfg = os.path.join(work, "r.yaml")
    with open(cfg, "w") as f:
        f.write(f"model: {{n_layer: 1, n_head: 2, n_embd: 16, block_size: 16}}\n"
                f"data: {{path: {work}/d.h5, batch_size: 2}}\n"
                f"train: {{steps: 6, device: cpu, out_dir: {work}/run}}\n"
                "eval: {every: 0, batches: 1}\nlog: {every: 1, tensorboard: false}\nsample: {tokens: 0}\n"
                "checkpoint: {every_steps: 3}\n")
    # one process
    run([binary, cfg])
    ck = os.path.join(work, "run", "ckpt")
    latest = open(os.path.join(ck, "latest")).read().strip()
    assert latest == "step_00000006", latest
    assert sorted(os.listdir(os.path.join(ck, latest))) == ["rank_00000.h5", "state.h5"]
    f, names = check_top(os.path.join(ck, latest, "state.h5"), 6, 1)
    model = h5py.File(os.path.join(work, "run", "model.h5"), "r")
    for name in ("wte.weight", "blocks.0.mlp.fc.weight", "ln_f.bias"):
        a, b = f["params"][name][...], model[name][...]
        assert a.dtype == np.float32 and a.shape == b.shape and np.array_equal(a, b), name
    assert np.all(f["adam_v"]["wte.weight"][...] >= 0)
    # ckpt export: plain weights equal to the checkpoint's params, usable by sample
    exported = os.path.join(work, "exported.h5")
    run([binary, "ckpt", "export", ck, exported])
    e = h5py.File(exported, "r")
    for name in f["params"]:
        assert np.array_equal(e[name][...], f["params"][name][...]), name
    s = subprocess.run([binary, "sample", cfg, "--weights", exported, "--prompt", "the ", "--tokens", "20"],
                       check=True, capture_output=True, text=True)
    assert s.stdout.startswith("the "), s.stdout

    # dp=2: one file per rank, virtual datasets over both
    run([mpiexec, "--oversubscribe", "--bind-to", "none", "-x", "OMP_NUM_THREADS", "-np", "2", binary, cfg,
         "data.batch_size=1", "parallel.zero=2", f"train.out_dir={work}/run2"])
    ck2 = os.path.join(work, "run2", "ckpt")
    latest = open(os.path.join(ck2, "latest")).read().strip()
    assert latest == "step_00000006", latest
    assert sorted(os.listdir(os.path.join(ck2, latest))) == ["rank_00000.h5", "rank_00001.h5", "state.h5"]
    elsewhere = os.path.join(work, "elsewhere")  # a working directory without the rank files
    os.makedirs(elsewhere)
    os.chdir(elsewhere)
    model2 = h5py.File(os.path.join(work, "run2", "model.h5"), "r")
    e2 = os.path.join(work, "exported2.h5")
    run([binary, "ckpt", "export", ck2, e2])
    exp2 = h5py.File(e2, "r")
    moved = os.path.join(work, "run2", "moved")
    straddle = midrow = 0
    for where in (os.path.join(ck2, latest), moved):
        if where == moved:
            os.rename(os.path.join(ck2, latest), moved)  # the directory renamed: still reads
        f2, names2 = check_top(os.path.join(os.path.relpath(where, elsewhere), "state.h5"), 6, 2)
        for name in f2["params"]:
            d = f2["params"][name]
            assert d.is_virtual, name
            srcs = d.virtual_sources()
            assert all(s.file_name in ("rank_00000.h5", "rank_00001.h5") for s in srcs), srcs
            a = d[...]
            assert not np.isnan(a).any(), f"{name}: unmapped elements (NaN fill) in {where}"
            assert np.array_equal(a, model2[name][...]) and np.array_equal(a, exp2[name][...]), name
            if where != moved:
                straddle += len({s.file_name for s in srcs}) > 1
                for s in srcs:
                    lo, hi = s.vspace.get_select_bounds()
                    midrow += len(d.shape) == 2 and (lo[1] != 0 or hi[1] != d.shape[1] - 1)
        for g in ("adam_m", "adam_v"):
            for name in f2[g]:
                assert not np.isnan(f2[g][name][...]).any(), (g, name)
        assert np.all(f2["adam_v"]["wte.weight"][...] >= 0)
        f2.close()
    assert straddle >= 1 and midrow >= 1, (straddle, midrow)
    print(f"CKPT H5PY OK: {latest}, {len(f['params'])} parameters; params equal model.h5 and the ckpt export; "
          f"manifest lists {len(names)} tensors; dp=2: 2 rank files, {straddle} parameter(s) straddling them, "
          f"{midrow} mapping(s) starting or ending mid-row, read from another directory and after a rename")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
