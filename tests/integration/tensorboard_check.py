#!/usr/bin/env python3
"""Reads fp8d's TensorBoard event files with TensorBoard's own reader and compares every value with
the run's metric and amax logs, as fp8d-metrics prints them. For a machine where the tensorboard
Python package is installed (the GPU machine; deploy/gpu-bundle.sh carries this script):

    python3 tensorboard_check.py --fp8d-metrics bin/fp8d-metrics RUN_DIR [RUN_DIR ...]

RUN_DIR is fp8d-train's output directory or a daemon job's directory (STATE_DIR/jobs/JOB). Prints
one line per run and, when every value matches, `tensorboard check: OK` (exit 0); otherwise each
mismatch and `tensorboard check: FAILED` (exit 1).
"""
import argparse
import json
import math
import struct
import subprocess
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

MAX_PROBLEMS_SHOWN = 20
AMAX_POINTS = 1000  # kTensorBoardAmaxPoints in core/tensorboard_writer.h


def f32(x):
    """The float32 a logged value was (JSON prints the shortest decimal that reads back to it)."""
    return struct.unpack("f", struct.pack("f", float(x)))[0]


def read_log(tool, run_dir, amax):
    args = [tool, run_dir, "--json"] + (["--amax"] if amax else [])
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def check_run(tool, run_dir):
    metrics = read_log(tool, run_dir, amax=False)
    amax = read_log(tool, run_dir, amax=True)
    acc = event_accumulator.EventAccumulator(
        run_dir, size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0})
    acc.Reload()
    scalar_tags = set(acc.Tags()["scalars"])
    problems = []
    compared = 0

    cache = {}

    def series(tag):
        if tag not in scalar_tags:
            problems.append(f"tag {tag} is missing")
            return {}
        if tag not in cache:
            cache[tag] = {e.step: e.value for e in acc.Scalars(tag)}
        return cache[tag]

    def expect(tag, step, want, got_series):
        nonlocal compared
        compared += 1
        got = got_series.get(step)
        if got is None or not (got == want or (math.isnan(got) and math.isnan(want))):
            problems.append(f"{tag} at step {step}: tensorboard {got}, log {want}")

    steps = [r["step"] for r in metrics if "step" in r]
    evals = [r["eval"] for r in metrics if "eval" in r]
    events = [r["event"] for r in metrics if "event" in r]
    step_fields = {"train/loss": "loss", "train/learning_rate": "lr",
                   "train/grad_norm": "grad_norm"}
    for tag, field in step_fields.items():
        s = series(tag)
        for m in steps:
            expect(tag, int(m["step"]), f32(m.get(field, 0.0)), s)
    versions = series("recipe/version")
    for m in steps:
        expect("recipe/version", int(m["step"]), float(m.get("recipe_version", 0)), versions)
    if evals:
        s = series("eval/loss")
        for e in evals:
            expect("eval/loss", int(e["step"]), f32(e.get("loss", 0.0)), s)

    total = max((int(m.get("total_steps", 0)) for m in steps), default=0)
    every = max(1, -(-total // AMAX_POINTS))
    written = [r for r in amax if int(r["step"]) % every == 0 or int(r["step"]) == total]
    tensors = 0
    for r in written:
        step = int(r["step"])
        for t in r.get("tensors", []):
            name = f"{t['layer']}/{t.get('role', 'TENSOR_ROLE_UNSPECIFIED').lower()}"
            for kind, field in (("fp8_amax", "amax"), ("fp8_scale", "scale"),
                                ("fp8_saturated", "frac_saturated"),
                                ("fp8_underflow", "frac_underflow")):
                tag = f"{kind}/{name}"
                expect(tag, step, f32(t.get(field, 0.0)), series(tag))
        tensors = max(tensors, len(r.get("tensors", [])))

    texts = acc.Tensors("events") if "events" in acc.Tags()["tensors"] else []
    if len(texts) != len(events):
        problems.append(f"{len(texts)} event texts in tensorboard, {len(events)} events logged")
    for text, event in zip(texts, events):
        value = tensor_util.make_ndarray(text.tensor_proto).item().decode()
        if event["kind"] not in value:
            problems.append(f"event text `{value}` does not name `{event['kind']}`")

    print(f"{run_dir}: {len(steps)} steps, {len(evals)} evals, {len(events)} events, "
          f"{tensors} FP8 tensors at {len(written)} steps: {compared} values compared, "
          f"{len(problems)} mismatches")
    for p in problems[:MAX_PROBLEMS_SHOWN]:
        print(f"  {p}")
    return not problems and compared > 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fp8d-metrics", required=True, help="the fp8d-metrics binary")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    args = parser.parse_args()
    ok = all([check_run(args.fp8d_metrics, d) for d in args.run_dirs])
    print("tensorboard check: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
