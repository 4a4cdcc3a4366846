#!/usr/bin/env python3
"""Trains one job file under several recipes and seeds and tells recipe effects from seed noise.

A single run per recipe cannot rank recipes on a small model: where a run ends depends on when it
leaves a loss plateau, which moves by a hundred steps from seed to seed. This runs `fp8d-train`
for every (recipe, seed) pair, reads each run's metrics.log and amax.log, and prints per recipe
the eval loss over the seeds (mean, sample standard deviation, range), the difference to the
baseline recipe on the same seeds (same initialisation and data order), the step at which the
training loss first fell below --plateau-loss, and the FP8 saturation and underflow fractions.

    PYTHONPATH=build/proto/py python3 tests/bench/recipe_seeds.py \
        --recipe bf16 --recipe delayed --recipe current \
        --recipe delayed+amax_history_len=1+amax_compute_algo=most_recent --seeds 1-8,1337

A recipe is NAME[+key=value]..., the keys relative to `recipe.` in the job file
(`delayed+policy.exclude=[".*attn\\.out"]`). --set applies to every run (`--set steps=1000`).
Saturated and underflow fractions are the per-step values of amax.log averaged over every FP8
tensor of a role and over the steps from step 2 on (step 1 quantizes with the initial scale
1.0 under `delayed`); the tensor with the largest mean is named. Runs go to OUT/RECIPE-seedN
(--out, default runs/recipe-seeds), which must not exist yet. Exit status 0 when every run
finished, 1 when one failed, 2 for usage errors.
"""
import argparse
import concurrent.futures
import os
import re
import statistics
import struct
import subprocess
import sys

from fp8d.v1 import telemetry_pb2

LOG_MAGIC = b"fp8dlog\0"
LOG_VERSION = 1
METRIC_TYPE, AMAX_TYPE = 1, 2
ROLES = {telemetry_pb2.INPUT: "input", telemetry_pb2.WEIGHT: "weight",
         telemetry_pb2.GRAD_OUTPUT: "grad_output"}
RUN_TIMEOUT_S = 3600


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def read_log(path: str, record_type: int, message):
    """Records of an fp8d log (core/metric_log.h): stops at a torn or corrupt tail, as fp8d does."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 16 or data[:8] != LOG_MAGIC:
        raise ValueError(f"{path}: not an fp8d log")
    version, stored = struct.unpack_from("<II", data, 8)
    if version != LOG_VERSION or stored != record_type:
        raise ValueError(f"{path}: version {version}, record type {stored}; "
                         f"expected {LOG_VERSION}, {record_type}")
    records, offset = [], 16
    while offset + 8 <= len(data):
        length, crc = struct.unpack_from("<II", data, offset)
        payload = data[offset + 8:offset + 8 + length]
        if len(payload) < length or crc32c(payload, crc32c(data[offset:offset + 4])) != crc:
            break
        record = message()
        record.ParseFromString(payload)
        records.append(record)
        offset += 8 + length
    return records


def parse_recipe(spec: str):
    name, *options = spec.split("+")
    sets = [f"recipe.name={name}"]
    for option in options:
        if "=" not in option:
            raise argparse.ArgumentTypeError(f"recipe option '{option}' in '{spec}' is not key=value")
        sets.append(f"recipe.{option}")
    return sets


def parse_seeds(text: str):
    seeds = []
    for part in text.split(","):
        if re.fullmatch(r"\d+-\d+", part):
            first, last = map(int, part.split("-"))
            seeds.extend(range(first, last + 1))
        elif re.fullmatch(r"\d+", part):
            seeds.append(int(part))
        else:
            raise argparse.ArgumentTypeError(f"seed list entry '{part}': allowed N or N-M")
    if not seeds or len(seeds) > 1000:
        raise argparse.ArgumentTypeError("--seeds: 1 to 1000 seeds")
    return seeds


def run_dir_name(recipe: str, seed: int) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", recipe) + f"-seed{seed}"


def train(args, recipe: str, seed: int) -> dict:
    out = os.path.join(args.out, run_dir_name(recipe, seed))
    cmd = [args.train, args.job, "--out", out, "--set", f"seed={seed}"]
    for s in parse_recipe(recipe) + args.set:
        cmd += ["--set", s]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"recipe": recipe, "seed": seed, "error": f"still running after {RUN_TIMEOUT_S} s"}
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return {"recipe": recipe, "seed": seed, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return summarize(out, recipe, seed, args.plateau_loss)


def summarize(out: str, recipe: str, seed: int, plateau_loss: float) -> dict:
    train_loss, evals = {}, {}
    for m in read_log(os.path.join(out, "metrics.log"), METRIC_TYPE, telemetry_pb2.MetricRecord):
        kind = m.WhichOneof("record")
        if kind == "step":
            train_loss[m.step.step] = m.step.loss
        elif kind == "eval":
            evals[m.eval.step] = m.eval.loss
    if not evals:
        return {"recipe": recipe, "seed": seed, "error": "no eval record in metrics.log"}
    final_step = max(evals)
    left_plateau = None
    for step in sorted(train_loss):
        window = [train_loss[s] for s in range(step - 9, step + 1) if s in train_loss]
        if step >= 10 and sum(window) / len(window) < plateau_loss:
            left_plateau = step
            break
    # Per role: (tensor name -> per-step fractions) from step 2 on.
    saturated, underflow = {}, {}
    for record in read_log(os.path.join(out, "amax.log"), AMAX_TYPE, telemetry_pb2.AmaxRecord):
        if record.step < 2:
            continue
        for t in record.tensors:
            role = ROLES.get(t.role, str(t.role))
            key = f"{t.layer}.{role}"
            saturated.setdefault(role, {}).setdefault(key, []).append(t.frac_saturated)
            underflow.setdefault(role, {}).setdefault(key, []).append(t.frac_underflow)
    return {"recipe": recipe, "seed": seed, "eval_step": final_step, "eval": evals[final_step],
            "left_plateau": left_plateau, "saturated": saturated, "underflow": underflow}


def role_means(runs, field):
    """role -> (mean over runs, tensors and steps; worst tensor by its mean; that mean)."""
    per_tensor = {}
    for run in runs:
        for role, tensors in run[field].items():
            for name, values in tensors.items():
                per_tensor.setdefault(role, {}).setdefault(name, []).extend(values)
    result = {}
    for role, tensors in per_tensor.items():
        every = [v for values in tensors.values() for v in values]
        worst = max(tensors, key=lambda n: statistics.fmean(tensors[n]))
        result[role] = (statistics.fmean(every), worst, statistics.fmean(tensors[worst]))
    return result


def fmt_fractions(means) -> str:
    if not means:
        return "—"
    return " / ".join(f"{means[r][0]:.1e}" if r in means else "—" for r in ROLES.values())


def report(recipes, seeds, results, baseline, plateau_loss):
    by = {(r["recipe"], r["seed"]): r for r in results if "error" not in r}
    print()
    print(f"| recipe | seeds | eval loss mean ± sd | min – max | vs {baseline}, same seeds "
          f"| step loss < {plateau_loss:g} (median) | saturated in / w / dy | underflow in / w / dy |")
    print("|---|---|---|---|---|---|---|---|")
    worst_lines = []
    for recipe in recipes:
        runs = [by[(recipe, s)] for s in seeds if (recipe, s) in by]
        if not runs:
            continue
        evals = [r["eval"] for r in runs]
        spread = f" ± {statistics.stdev(evals):.3f}" if len(evals) > 1 else ""
        diffs = [by[(recipe, s)]["eval"] - by[(baseline, s)]["eval"]
                 for s in seeds if (recipe, s) in by and (baseline, s) in by]
        if recipe == baseline or not diffs:
            versus = "—"
        else:
            dsd = f" ± {statistics.stdev(diffs):.3f}" if len(diffs) > 1 else ""
            versus = f"{statistics.fmean(diffs):+.3f}{dsd} (n={len(diffs)})"
        left = [r["left_plateau"] for r in runs if r["left_plateau"] is not None]
        left_text = f"{statistics.median(left):.0f}" if left else "never"
        if len(left) < len(runs) and left:
            left_text += f" ({len(runs) - len(left)} never)"
        sat, unf = role_means(runs, "saturated"), role_means(runs, "underflow")
        print(f"| {recipe} | {len(runs)} | {statistics.fmean(evals):.3f}{spread} "
              f"| {min(evals):.3f} – {max(evals):.3f} | {versus} | {left_text} "
              f"| {fmt_fractions(sat)} | {fmt_fractions(unf)} |")
        for label, means in (("saturated", sat), ("underflow", unf)):
            for role, (_, worst, value) in means.items():
                if value > 0:
                    worst_lines.append(f"  {recipe}: most {label} {role}: {worst} ({value:.1e})")
    if worst_lines:
        print()
        print("\n".join(worst_lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", default="build/server/fp8d-train")
    parser.add_argument("--job", default="deploy/jobs/demo.yaml")
    parser.add_argument("--recipe", action="append", default=[],
                        help="NAME[+key=value]...; repeat. Default: bf16, delayed, current")
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("1-4"))
    parser.add_argument("--set", action="append", default=[], help="key=value for every run")
    parser.add_argument("--baseline", help="recipe the others are compared with (default: first)")
    parser.add_argument("--plateau-loss", type=float, default=3.0)
    parser.add_argument("--parallel", type=int, default=1, choices=range(1, 65), metavar="N")
    parser.add_argument("--out", default="runs/recipe-seeds")
    args = parser.parse_args()
    recipes = args.recipe or ["bf16", "delayed", "current"]
    for recipe in recipes:
        try:
            parse_recipe(recipe)
        except argparse.ArgumentTypeError as e:
            parser.error(str(e))
    baseline = args.baseline or recipes[0]
    if baseline not in recipes:
        parser.error(f"--baseline {baseline} is not one of the --recipe values")

    jobs = [(r, s) for r in recipes for s in args.seeds]
    # fp8d-train appends to the logs of an existing output directory, which would mix two runs.
    existing = [d for d in (os.path.join(args.out, run_dir_name(r, s)) for r, s in jobs)
                if os.path.exists(d)]
    if existing:
        parser.error(f"{existing[0]} already exists ({len(existing)} of the run directories "
                     f"do): remove them or choose another --out")
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.parallel) as pool:
        futures = [pool.submit(train, args, r, s) for r, s in jobs]
        for future in concurrent.futures.as_completed(futures):
            r = future.result()
            results.append(r)
            if "error" in r:
                print(f"{r['recipe']} seed {r['seed']}: FAILED {r['error']}", flush=True)
            else:
                print(f"{r['recipe']} seed {r['seed']}: eval loss {r['eval']:.4f} at step "
                      f"{r['eval_step']}, loss < {args.plateau_loss:g} from step "
                      f"{r['left_plateau'] if r['left_plateau'] is not None else 'never'}",
                      flush=True)
    report(recipes, args.seeds, results, baseline, args.plateau_loss)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
