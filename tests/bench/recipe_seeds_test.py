"""tests/bench/recipe_seeds.py against real fp8d-train runs of the demo job, cut to a few steps.

Run by ctest (tests/CMakeLists.txt) with FP8D_TRAIN, FP8D_SOURCE_DIR and PYTHONPATH (the build's
generated proto/py) in the environment.
"""
import os
import re
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import recipe_seeds  # noqa: E402
from fp8d.v1 import telemetry_pb2  # noqa: E402

TRAIN = os.environ["FP8D_TRAIN"]
SOURCE_DIR = os.environ["FP8D_SOURCE_DIR"]
SCRIPT = os.path.join(SOURCE_DIR, "tests", "bench", "recipe_seeds.py")
JOB = os.path.join(SOURCE_DIR, "deploy", "jobs", "demo.yaml")
SHORT = ["--set", "steps=6", "--set", "optimizer.warmup_steps=2", "--set", "eval_interval=3", "--set", "eval_batches=2"]


class RecipeSeedsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.out = os.path.join(cls.tmp.name, "study")
        cls.study = subprocess.run(
            [sys.executable, SCRIPT, "--train", TRAIN, "--job", JOB, "--recipe", "bf16",
             "--recipe", "delayed+amax_history_len=4", "--seeds", "1-2", "--parallel", "2",
             "--out", cls.out] + SHORT,
            capture_output=True, text=True, timeout=600, check=False)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_study_reports_the_eval_loss_fp8d_train_prints(self):
        self.assertEqual(self.study.returncode, 0, self.study.stdout + self.study.stderr)
        # The same run by hand: its printed final eval loss is the one the study reads back.
        direct = subprocess.run(
            [TRAIN, JOB, "--out", os.path.join(self.tmp.name, "direct"), "--set", "seed=2",
             "--set", "recipe.name=delayed", "--set", "recipe.amax_history_len=4"] + SHORT,
            capture_output=True, text=True, timeout=300, check=True)
        printed = re.search(r"eval  step 6: loss (\d+\.\d+)", direct.stdout)
        self.assertIsNotNone(printed, direct.stdout)
        self.assertIn(f"delayed+amax_history_len=4 seed 2: eval loss {printed.group(1)} at step 6",
                      self.study.stdout)

    def test_table_has_a_row_per_recipe_with_paired_differences(self):
        rows = {}
        for line in self.study.stdout.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 8 and cells[1] == "2":
                rows[cells[0]] = cells
        self.assertEqual(set(rows), {"bf16", "delayed+amax_history_len=4"}, self.study.stdout)
        self.assertRegex(rows["bf16"][2], r"^\d\.\d{3} ± \d\.\d{3}$")
        self.assertEqual(rows["bf16"][4], "—")         # the baseline against itself
        self.assertEqual(rows["bf16"][6], "—")         # no FP8 tensors under bf16
        delayed = rows["delayed+amax_history_len=4"]
        self.assertRegex(delayed[4], r"^[-+]\d\.\d{3} ± \d\.\d{3} \(n=2\)$")
        self.assertRegex(delayed[6], r"^\d\.\de[-+]\d\d / \d\.\de[-+]\d\d / \d\.\de[-+]\d\d$")
        # Six steps never leave the initial loss of ~5.5 nats.
        self.assertEqual(delayed[5], "never")

    def test_log_reader_stops_at_a_torn_or_corrupt_record(self):
        log = os.path.join(self.out, "bf16-seed1", "metrics.log")
        with open(log, "rb") as f:
            data = f.read()
        whole = recipe_seeds.read_log(log, recipe_seeds.METRIC_TYPE, telemetry_pb2.MetricRecord)
        self.assertGreaterEqual(len(whole), 8)  # six steps, two evals, events
        torn = os.path.join(self.tmp.name, "torn.log")
        with open(torn, "wb") as f:
            f.write(data + data[16:40])  # the start of another record
        self.assertEqual(len(recipe_seeds.read_log(torn, recipe_seeds.METRIC_TYPE,
                                                   telemetry_pb2.MetricRecord)), len(whole))
        corrupt = bytearray(data)
        corrupt[16 + 8] ^= 0x01  # first payload byte of the first record
        with open(torn, "wb") as f:
            f.write(corrupt)
        self.assertEqual(recipe_seeds.read_log(torn, recipe_seeds.METRIC_TYPE,
                                               telemetry_pb2.MetricRecord), [])
        with self.assertRaisesRegex(ValueError, "record type 1"):
            recipe_seeds.read_log(log, recipe_seeds.AMAX_TYPE, telemetry_pb2.AmaxRecord)

    def test_a_second_study_into_the_same_directory_is_refused(self):
        again = subprocess.run(
            [sys.executable, SCRIPT, "--train", TRAIN, "--job", JOB, "--recipe", "bf16",
             "--seeds", "1", "--out", self.out] + SHORT,
            capture_output=True, text=True, timeout=60, check=False)
        self.assertEqual(again.returncode, 2)
        self.assertIn("bf16-seed1 already exists", again.stderr)

    def test_seed_lists_and_recipe_options_are_checked(self):
        self.assertEqual(recipe_seeds.parse_seeds("1-3,7"), [1, 2, 3, 7])
        self.assertEqual(recipe_seeds.parse_recipe("delayed+margin=1"),
                         ["recipe.name=delayed", "recipe.margin=1"])
        bad = subprocess.run([sys.executable, SCRIPT, "--train", TRAIN, "--seeds", "1,x"],
                             capture_output=True, text=True, timeout=60, check=False)
        self.assertEqual(bad.returncode, 2)
        self.assertIn("seed list entry 'x'", bad.stderr)


if __name__ == "__main__":
    unittest.main()
