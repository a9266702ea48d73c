"""prep_h5py.py — `gml-dist prep` output read with plain h5py.

Runs the real binary on the fixtures in tests/data/text/ (in both argument
orders, with and without --strip-fortune, char and byte tokenizers) and checks
the file with h5py/numpy only: attributes, dtypes, chunking, the train/val
split sizes, and that decoding all tokens with /tokenizer_vocab gives back the
concatenated text computed here in Python. Prints "PREP H5PY OK".

usage: prep_h5py.py GML_BINARY SOURCE_DIR
"""
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np


def expected_text(paths, strip):
    out = b""
    for p in paths:
        data = open(p, "rb").read()
        if not data:
            continue
        if out and not out.endswith(b"\n"):
            out += b"\n"
        out += data
    if strip:
        lines = out.split(b"\n")
        keep = []
        for i, line in enumerate(lines):
            last = i == len(lines) - 1
            if line == b"%":
                continue
            keep.append(line + (b"" if last else b"\n"))
        out = b"".join(keep)
    return out


def check(binary, inputs, tokenizer, strip, frac, tmp):
    out = os.path.join(tmp, "out.h5")
    args = [binary, "prep", "--tokenizer", tokenizer, "--val-fraction", str(frac), "--out", out]
    if strip:
        args.append("--strip-fortune")
    r = subprocess.run(args + inputs, capture_output=True, text=True)
    assert r.returncode == 0, (r.returncode, r.stderr)
    text = expected_text(inputs, strip)
    text.decode("utf-8")  # the fixtures are UTF-8
    with h5py.File(out, "r") as f:
        a = f.attrs
        fmt = a["format"]
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        assert fmt == "gml-tokens", fmt
        assert int(a["format_version"]) == 1
        tok = a["tokenizer"]
        tok = tok.decode() if isinstance(tok, bytes) else tok
        assert tok == tokenizer, tok
        vocab = int(a["vocab_size"])
        if tokenizer == "char":
            table = f["tokenizer_vocab"][:]
            assert table.dtype == np.uint8
            want = sorted(set(text))
            assert list(table) == want, (list(table), want)
            assert vocab == len(want)
        else:
            assert "tokenizer_vocab" not in f
            assert vocab == 256
            table = np.arange(256, dtype=np.uint8)
        for name in ("train", "val"):
            d = f[name]
            assert d.ndim == 1 and d.dtype == np.uint16, (name, d.shape, d.dtype)
            assert d.chunks is not None, name
        train, val = f["train"][:], f["val"][:]
    n = len(text)
    nval = int(np.floor(n * frac))
    assert len(val) == nval and len(train) == n - nval, (len(train), len(val), n)
    ids = np.concatenate([train, val])
    assert ids.max() < vocab
    got = table[ids].tobytes()
    assert got == text, (got[:80], text[:80])


def main():
    binary, src = sys.argv[1], sys.argv[2]
    d = os.path.join(src, "tests", "data", "text")
    mixed, nonl = os.path.join(d, "mixed.txt"), os.path.join(d, "no_newline.txt")
    with tempfile.TemporaryDirectory(prefix="gml-prep-h5py-") as tmp:
        for inputs in ([mixed, nonl], [nonl, mixed]):
            for tokenizer in ("char", "byte"):
                for strip in (False, True):
                    check(binary, inputs, tokenizer, strip, 0.1 if strip else 0.3, tmp)
    print("PREP H5PY OK")


if __name__ == "__main__":
    main()
