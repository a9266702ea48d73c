#!/usr/bin/env python3
"""tb_read.py -- read gml-dist's TensorBoard event files with TensorBoard's own
loader and compare what it got with expected values.

  tb_read.py DIR EXPECTED.json
      EXPECTED.json: {"TAG": [[step, value] or [step, value, wall_time], ...]}.
      Loads DIR with event_accumulator.EventAccumulator and checks that the
      scalar tags are exactly the expected ones and that each tag's
      (step, value[, wall_time]) list matches (values compared as float32).
  tb_read.py --fixture BIN [--keep]
      Runs BIN (tests/tb_write_fixture) into a fresh temporary directory,
      recomputes the fixture's scalars from its formulas here, writes them to
      DIR/expected.json and checks DIR/direct as above; then checks the
      file_version record, the file name, that TensorBoard rejects a record
      with a corrupted byte (so CRCs are really verified), the metrics run's
      TensorBoard tags and its metrics.jsonl (parsed with json).

Exit status 0 when all checks pass, 1 otherwise. A missing `tensorboard`
package is a failure, not a skip. Not for: general-purpose event inspection.
"""
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

try:
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.backend.event_processing import event_file_loader
except ImportError as e:  # must fail, not skip
    sys.stderr.write(
        "FAIL: the Python running this test (%s) has no usable tensorboard package (%s).\n"
        "---> HINT: configure with -DGML_PYTHON=/path/to/python-with-tensorboard\n" % (sys.executable, e))
    sys.exit(1)


def f32(x):
    """Round a Python float to the nearest float32, as (float) in C does."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def fail(msg):
    raise AssertionError(msg)


def load(dir_):
    ea = event_accumulator.EventAccumulator(dir_)
    ea.Reload()
    return ea


def check_scalars(dir_, expected):
    """Compare DIR's scalars (via EventAccumulator) with {tag: [[step, value(, wall)]]}."""
    ea = load(dir_)
    got_tags = sorted(ea.Tags()["scalars"])
    if got_tags != sorted(expected):
        fail("%s: scalar tags %s, expected %s" % (dir_, got_tags, sorted(expected)))
    for tag, rows in expected.items():
        events = ea.Scalars(tag)
        if len(events) != len(rows):
            fail("%s: tag %s has %d events, expected %d" % (dir_, tag, len(events), len(rows)))
        for ev, row in zip(events, rows):
            step, value = row[0], f32(row[1])
            if ev.step != step:
                fail("%s: tag %s: step %d, expected %d" % (dir_, tag, ev.step, step))
            if not (ev.value == value or (math.isnan(ev.value) and math.isnan(value))):
                fail("%s: tag %s step %d: value %r, expected %r" % (dir_, tag, step, ev.value, value))
            if len(row) > 2 and ev.wall_time != row[2]:
                fail("%s: tag %s step %d: wall_time %r, expected %r" % (dir_, tag, step, ev.wall_time, row[2]))
    return ea


def fixture_expected():
    """The scalars tests/tb_write_fixture.c writes into DIR/direct, recomputed
    here from the formulas in its header comment."""
    steps = [0, 3, 6, 9, 12]
    exp = {
        "fixture/linear": [[s, f32(0.5 * s - 3.0), 1700000000.0 + s] for s in steps],
        "fixture/square": [[s, f32(s * s / 7.0), 1700000000.0 + s] for s in steps],
        "fixture/decay": [[s, f32(math.exp(-s / 4.0)), 1700000000.0 + s] for s in steps],
        "fixture/bigstep": [[2**33 + k, f32(-(k + 1) * 1.25), 1700000000.0 + k] for k in range(5)],
    }
    return exp


def event_files(dir_):
    return sorted(os.path.join(dir_, f) for f in os.listdir(dir_) if "tfevents" in f)


def raw_events(path):
    """The file's Event protos as written (LegacyEventFileLoader parses the
    records but skips EventFileLoader's migration of simple_value to tensors)."""
    return list(event_file_loader.LegacyEventFileLoader(path).Load())


def check_file_version(dir_, n_scalars):
    files = event_files(dir_)
    if len(files) != 1:
        fail("%s: expected one event file, found %s" % (dir_, files))
    name = os.path.basename(files[0])
    if not re.fullmatch(r"events\.out\.tfevents\.\d{10,}\.[A-Za-z0-9._-]+\.\d+\.gml", name):
        fail("event file name %r does not follow events.out.tfevents.<secs>.<host>.<pid>.gml" % name)
    secs = int(name.split(".")[3])
    if abs(secs - time.time()) > 3600:
        fail("event file name time %d is not now" % secs)
    events = raw_events(files[0])
    if len(events) != 1 + n_scalars:
        fail("%s: %d records, expected %d" % (files[0], len(events), 1 + n_scalars))
    first = events[0]
    if first.WhichOneof("what") != "file_version" or first.file_version != "brain.Event:2":
        fail("first record is %r, expected file_version 'brain.Event:2'" % (first,))
    if abs(first.wall_time - time.time()) > 3600:
        fail("first record wall_time %r is not now" % first.wall_time)
    for ev in events[1:]:
        if ev.WhichOneof("what") != "summary" or len(ev.summary.value) != 1:
            fail("record is not a one-value summary: %r" % (ev,))
        if ev.summary.value[0].WhichOneof("value") != "simple_value":
            fail("record does not hold a simple_value: %r" % (ev,))
    ea = load(dir_)
    if ea.file_version != 2.0:
        fail("EventAccumulator.file_version = %r, expected 2.0" % ea.file_version)
    return files[0], events


def check_crc_rejected(path, n_records, tmp):
    """Flip one byte inside the 4th record's data: TensorBoard's reader must
    stop there (it verifies the masked CRC-32C), so fewer records load."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    off = 0
    for _ in range(3):  # skip 3 records
        (n,) = struct.unpack_from("<Q", data, off)
        off += 12 + n + 4
    data[off + 12 + 2] ^= 0x01
    bad_dir = os.path.join(tmp, "corrupt")
    os.makedirs(bad_dir)
    bad = os.path.join(bad_dir, os.path.basename(path))
    with open(bad, "wb") as f:
        f.write(data)
    try:
        got = len(raw_events(bad))
    except Exception:  # a loud refusal is as good as stopping
        got = 0
    if got >= n_records:
        fail("TensorBoard loaded %d records from a file with a corrupted record (expected < %d): "
             "CRCs are not being verified, so the CRC check proves nothing" % (got, n_records))


def check_run(run_dir):
    steps = [1, 2, 3, 4]
    exp = {
        "train/loss": [[s, 4.0 - 0.5 * s] for s in steps],
        "train/lr": [[s, 1e-3 * s] for s in steps],
        "train/grad_norm": [[s, 1.0 / s] for s in steps],
        "train/tokens_per_s": [[s, 1000.0 * s] for s in steps],
        "train/mfu": [[s, 0.1 * s] for s in (3, 4)],
        "val/loss": [[4, 3.25]],
    }
    check_scalars(os.path.join(run_dir, "tb"), exp)
    check_file_version(os.path.join(run_dir, "tb"), sum(len(v) for v in exp.values()))

    now = time.time()
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines[-1] != "":
        fail("metrics.jsonl does not end in a newline")
    objs = [json.loads(line) for line in lines[:-1]]
    kinds = [o["kind"] for o in objs]
    if kinds != ["train"] * 4 + ["eval", "sample", "info"]:
        fail("metrics.jsonl kinds %s" % kinds)
    for o in objs:
        if not isinstance(o["time"], float) or abs(o["time"] - now) > 3600:
            fail("bad time in %r" % o)
    for s, o in zip(steps, objs[:4]):
        want = {"step": s, "steps": 4, "loss": 4.0 - 0.5 * s, "lr": 1e-3 * s, "grad_norm": 1.0 / s,
                "step_s": 0.25, "tokens_per_s": 1000.0 * s, "mfu": None if s <= 2 else 0.1 * s,
                "mem_bytes": 2.0**30, "eta_s": 10.0 * (4 - s)}
        for k, v in want.items():
            g = o.get(k, "missing")
            ok = (g is None and v is None) or (v is not None and isinstance(g, (int, float))
                                               and math.isclose(g, v, rel_tol=1e-8))
            if not ok:
                fail("train line for step %d: %s = %r, expected %r" % (s, k, g, v))
    if objs[4]["step"] != 4 or objs[4]["val_loss"] != 3.25:
        fail("eval line %r" % objs[4])
    want_text = 'He said "hi"\n\tC:\\ caf\u00e9 \ufffd!'
    if objs[5]["step"] != 4 or objs[5]["text"] != want_text:
        fail("sample line %r, text expected %r" % (objs[5], want_text))
    if objs[6].get("device") != "cpu (fixture)":
        fail("info line %r" % objs[6])


def run_fixture(binary, keep):
    tmp = tempfile.mkdtemp(prefix="gml-tb-")
    try:
        proc = subprocess.run([binary, tmp], capture_output=True, text=True, errors="replace", timeout=120)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            fail("%s exited %d: %s" % (binary, proc.returncode, proc.stderr))
        exp = fixture_expected()
        exp_path = os.path.join(tmp, "expected.json")
        with open(exp_path, "w") as f:
            json.dump(exp, f)
        with open(exp_path) as f:
            exp = json.load(f)
        direct = os.path.join(tmp, "direct")
        check_scalars(direct, exp)
        path, events = check_file_version(direct, sum(len(v) for v in exp.values()))
        check_crc_rejected(path, len(events), tmp)
        check_run(os.path.join(tmp, "run"))
        if "step     4/4 | loss 2.0000 | lr 4.00e-03 | norm 0.2500 | 250.0 ms | 4.0k tok/s | MFU 40.0% | " \
           "mem 1.00 GiB | ETA 0s\n" not in proc.stdout:
            fail("progress line for step 4 not found in the fixture's stdout")
    finally:
        if keep:
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv):
    try:
        if len(argv) >= 3 and argv[1] == "--fixture":
            run_fixture(argv[2], "--keep" in argv[3:])
        elif len(argv) == 3:
            with open(argv[2]) as f:
                check_scalars(argv[1], json.load(f))
        else:
            sys.stderr.write(__doc__)
            return 2
    except AssertionError as e:
        sys.stderr.write("FAIL: %s\n" % e)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
