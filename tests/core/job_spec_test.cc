// Job files and --set overrides map onto the JobSpec schema with errors naming file, field path
// and what is allowed; ResolveJobSpec fills the documented defaults and checks every range.
#include "core/job_spec.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fp8d {
namespace {

using ::testing::HasSubstr;

constexpr char kDemoYaml[] = R"(name: demo
model:
  preset: tiny
  n_layer: 3
data:
  train: fortunes.txt
  format: text
optimizer:
  lr: 1e-3
  warmup_steps: 10
steps: 200
batch_size: 4
recipe:
  name: delayed
  amax_history_len: 8
  policy:
    include: ["layers\\.0\\..*", "lm_head"]
    skip_lm_head: false
seed: 7
)";

fp8d::v1::JobSpec MinimalSpec() {
  absl::StatusOr<fp8d::v1::JobSpec> spec =
      ParseJobText("model: {preset: tiny}\ndata: {train: a.txt}\nsteps: 10\n", "min.yaml");
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *spec;
}

TEST(JobSpecParse, ReadsEveryYamlSection) {
  absl::StatusOr<fp8d::v1::JobSpec> spec = ParseJobText(kDemoYaml, "demo.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name(), "demo");
  EXPECT_EQ(spec->model().preset(), "tiny");
  EXPECT_EQ(spec->model().n_layer(), 3);
  EXPECT_FALSE(spec->model().has_d_model());
  EXPECT_EQ(spec->data().train(), "fortunes.txt");
  EXPECT_EQ(spec->data().format(), "text");
  EXPECT_FLOAT_EQ(spec->optimizer().lr(), 1e-3f);
  EXPECT_EQ(spec->optimizer().warmup_steps(), 10);
  EXPECT_EQ(spec->steps(), 200);
  EXPECT_EQ(spec->batch_size(), 4);
  EXPECT_EQ(spec->recipe().name(), "delayed");
  EXPECT_EQ(spec->recipe().amax_history_len(), 8);
  ASSERT_EQ(spec->recipe().policy().include_size(), 2);
  EXPECT_EQ(spec->recipe().policy().include(0), "layers\\.0\\..*");
  EXPECT_FALSE(spec->recipe().policy().skip_lm_head());
  EXPECT_TRUE(spec->recipe().policy().has_skip_lm_head());
  EXPECT_EQ(spec->seed(), 7u);
}

TEST(JobSpecParse, ReadsJsonWithTheSameSchema) {
  absl::StatusOr<fp8d::v1::JobSpec> spec = ParseJobText(
      R"({"model": {"preset": "tiny"}, "data": {"train": "x.bin"}, "steps": 5,
          "optimizer": {"lr": 0.002}, "seed": "99"})",
      "job.json");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->steps(), 5);
  EXPECT_FLOAT_EQ(spec->optimizer().lr(), 0.002f);
  EXPECT_EQ(spec->seed(), 99u);
}

TEST(JobSpecParse, PlainScalarsTakeTheFieldsType) {
  // `name: 2024` is a string field, `steps: "12"` a number written as a string.
  absl::StatusOr<fp8d::v1::JobSpec> spec = ParseJobText("name: 2024\nsteps: \"12\"\n", "a.yaml");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name(), "2024");
  EXPECT_EQ(spec->steps(), 12);
}

TEST(JobSpecParse, UnknownFieldNamesPathFileLineAndAllowedFields) {
  absl::StatusOr<fp8d::v1::JobSpec> spec =
      ParseJobText("model:\n  preset: tiny\n  n_layers: 3\n", "demo.yaml");
  ASSERT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(spec.status().message(), HasSubstr("unknown field `model.n_layers` in demo.yaml"));
  EXPECT_THAT(spec.status().message(), HasSubstr("line 3"));
  EXPECT_THAT(spec.status().message(), HasSubstr("n_layer, d_model"));
}

TEST(JobSpecParse, UnknownTopLevelField) {
  absl::StatusOr<fp8d::v1::JobSpec> spec = ParseJobText("stepz: 3\n", "demo.yaml");
  EXPECT_THAT(spec.status().message(), HasSubstr("unknown field `stepz` in demo.yaml"));
}

TEST(JobSpecParse, NonIntegerNamesFieldAndExpectedType) {
  absl::StatusOr<fp8d::v1::JobSpec> spec = ParseJobText("steps: many\n", "demo.yaml");
  ASSERT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(spec.status().message(), HasSubstr("`steps` in demo.yaml"));
  EXPECT_THAT(spec.status().message(), HasSubstr("expected an integer"));
}

TEST(JobSpecParse, Int32OverflowIsRejected) {
  absl::StatusOr<fp8d::v1::JobSpec> spec = ParseJobText("steps: 3000000000\n", "demo.yaml");
  EXPECT_THAT(spec.status().message(), HasSubstr("`steps`"));
}

TEST(JobSpecParse, NonBooleanNamesField) {
  absl::StatusOr<fp8d::v1::JobSpec> spec =
      ParseJobText("model:\n  tie_embeddings: maybe\n", "demo.yaml");
  EXPECT_THAT(spec.status().message(), HasSubstr("`model.tie_embeddings`"));
  EXPECT_THAT(spec.status().message(), HasSubstr("expected true or false"));
}

TEST(JobSpecParse, NonNumberNamesField) {
  absl::StatusOr<fp8d::v1::JobSpec> spec = ParseJobText("optimizer: {lr: fast}\n", "demo.yaml");
  EXPECT_THAT(spec.status().message(), HasSubstr("`optimizer.lr`"));
  EXPECT_THAT(spec.status().message(), HasSubstr("expected a number"));
}

TEST(JobSpecParse, ScalarWhereGroupExpected) {
  absl::StatusOr<fp8d::v1::JobSpec> spec = ParseJobText("model: tiny\n", "demo.yaml");
  EXPECT_THAT(spec.status().message(), HasSubstr("`model` in demo.yaml"));
  EXPECT_THAT(spec.status().message(), HasSubstr("expected a mapping of ModelConfig fields"));
}

TEST(JobSpecParse, DuplicateKeyIsRejected) {
  absl::StatusOr<fp8d::v1::JobSpec> spec = ParseJobText("steps: 1\nsteps: 2\n", "demo.yaml");
  EXPECT_THAT(spec.status().message(), HasSubstr("`steps` in demo.yaml"));
  EXPECT_THAT(spec.status().message(), HasSubstr("more than once"));
}

TEST(JobSpecParse, MalformedYamlNamesFileAndLine) {
  absl::StatusOr<fp8d::v1::JobSpec> spec = ParseJobText("model: [unclosed\n", "bad.yaml");
  ASSERT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(spec.status().message(), HasSubstr("bad.yaml (line"));
}

TEST(JobSpecParse, MissingFileIsNotFound) {
  EXPECT_EQ(ParseJobFile("/nonexistent/job.yaml").status().code(), absl::StatusCode::kNotFound);
}

TEST(JobSpecParse, FileErrorsNameTheFile) {
  const std::string path =
      (std::filesystem::path(testing::TempDir()) /
       ("job_spec_test_bad_" + std::to_string(getpid()) + ".yaml")).string();
  std::ofstream(path) << "steps: 1\nbogus: 2\n";
  absl::StatusOr<fp8d::v1::JobSpec> spec = ParseJobFile(path);
  std::filesystem::remove(path);
  EXPECT_THAT(spec.status().message(),
              HasSubstr("unknown field `bogus` in " + std::filesystem::path(path).filename().string()));
}

TEST(JobSpecParse, BinaryFileSaysItIsNotTextAndNamesTheFile) {
  // Before: a libprotobuf ERROR on stderr and INTERNAL with an empty message.
  const std::string binary("\x7f" "ELF\x02\x01\x01\x00\x00\x00", 12);
  absl::Status s = ParseJobText(binary, "a.out").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              testing::AllOf(HasSubstr("a.out"), HasSubstr("not a text file"),
                             HasSubstr("offset 7")));
  absl::Status latin1 = ParseJobText("name: caf\xe9\nsteps: 1\n", "latin1.yaml").status();
  EXPECT_THAT(std::string(latin1.message()),
              testing::AllOf(HasSubstr("latin1.yaml"), HasSubstr("not valid UTF-8")));
}

TEST(JobSpecParse, EmptyFileSaysItIsEmpty) {
  for (const char* text : {"", "\n\n", "# only a comment\n", "---\n"}) {
    absl::Status s = ParseJobText(text, "empty.yaml").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(s.message()), HasSubstr("empty.yaml is empty")) << text;
  }
}

TEST(JobSpecParse, MultiDocumentYamlIsRefused) {
  // Before: every document but the first was silently dropped.
  absl::Status s =
      ParseJobText("steps: 1\n---\nsteps: 2\n---\nsteps: 3\n", "three.yaml").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              testing::AllOf(HasSubstr("three.yaml"), HasSubstr("3 YAML documents")));
}

TEST(JobSpecParse, DeepNestingAndHugeFilesAreRefused) {
  absl::Status deep = ParseJobText(std::string(100000, '['), "deep.yaml").status();
  EXPECT_THAT(std::string(deep.message()),
              testing::AllOf(HasSubstr("deep.yaml"), HasSubstr("levels deep")));
  absl::Status huge =
      ParseJobText(std::string(kMaxJobFileBytes + 1, '#'), "huge.yaml").status();
  EXPECT_THAT(std::string(huge.message()), HasSubstr("a job file is at most"));
}

TEST(JobSpecSet, SetsNumbersAndStrings) {
  fp8d::v1::JobSpec spec = MinimalSpec();
  ASSERT_TRUE(ApplySetOverride(&spec, "optimizer.lr=1e-3").ok());
  ASSERT_TRUE(ApplySetOverride(&spec, "recipe.name=delayed").ok());
  ASSERT_TRUE(ApplySetOverride(&spec, "seed=42").ok());
  EXPECT_FLOAT_EQ(spec.optimizer().lr(), 1e-3f);
  EXPECT_EQ(spec.recipe().name(), "delayed");
  EXPECT_EQ(spec.seed(), 42u);
  EXPECT_EQ(spec.steps(), 10);  // untouched fields survive the round trip
  EXPECT_EQ(spec.data().train(), "a.txt");
}

TEST(JobSpecSet, RepeatedFieldTakesOneValueOrAList) {
  fp8d::v1::JobSpec spec = MinimalSpec();
  ASSERT_TRUE(ApplySetOverride(&spec, "recipe.policy.include=layers\\.[0-9]{1}\\..*").ok());
  ASSERT_EQ(spec.recipe().policy().include_size(), 1);
  EXPECT_EQ(spec.recipe().policy().include(0), "layers\\.[0-9]{1}\\..*");
  ASSERT_TRUE(ApplySetOverride(&spec, "recipe.policy.include=[a, b]").ok());
  ASSERT_EQ(spec.recipe().policy().include_size(), 2);
  EXPECT_EQ(spec.recipe().policy().include(1), "b");
}

TEST(JobSpecSet, EmptyValueClearsField) {
  fp8d::v1::JobSpec spec = MinimalSpec();
  ASSERT_TRUE(ApplySetOverride(&spec, "steps=").ok());
  EXPECT_FALSE(spec.has_steps());
}

TEST(JobSpecSet, UnknownKeyNamesPathAndAllowedFields) {
  fp8d::v1::JobSpec spec = MinimalSpec();
  absl::Status s = ApplySetOverride(&spec, "optimizer.lrr=1");
  ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("unknown field `optimizer.lrr` in --set optimizer.lrr=1"));
  EXPECT_THAT(s.message(), HasSubstr("lr, min_lr"));
}

TEST(JobSpecSet, WrongTypeLeavesSpecUnchanged) {
  fp8d::v1::JobSpec spec = MinimalSpec();
  const fp8d::v1::JobSpec before = spec;
  absl::Status s = ApplySetOverride(&spec, "batch_size=large");
  EXPECT_THAT(s.message(), HasSubstr("`batch_size` in --set batch_size=large"));
  EXPECT_EQ(spec.SerializeAsString(), before.SerializeAsString());
}

TEST(JobSpecSet, PathThroughSingleValueIsRejected) {
  fp8d::v1::JobSpec spec = MinimalSpec();
  EXPECT_THAT(ApplySetOverride(&spec, "steps.x=1").message(),
              HasSubstr("`steps` in --set steps.x=1 is a single value"));
}

TEST(JobSpecSet, MissingEqualsIsRejected) {
  fp8d::v1::JobSpec spec = MinimalSpec();
  EXPECT_THAT(ApplySetOverride(&spec, "optimizer.lr").message(), HasSubstr("expected key=value"));
}

TEST(JobSpecResolve, FillsDocumentedDefaults) {
  absl::StatusOr<fp8d::v1::JobSpec> spec = ResolveJobSpec(MinimalSpec());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model().n_layer(), 2);  // from the tiny preset
  EXPECT_EQ(spec->model().vocab_size(), 256);
  EXPECT_EQ(spec->batch_size(), 8);
  EXPECT_EQ(spec->seq_len(), 256);        // min(256, max_seq_len)
  EXPECT_EQ(spec->grad_accum(), 1);
  EXPECT_EQ(spec->data().format(), "auto");
  EXPECT_FLOAT_EQ(spec->data().val_fraction(), 0.05f);
  EXPECT_FLOAT_EQ(spec->optimizer().lr(), 3e-4f);
  EXPECT_FLOAT_EQ(spec->optimizer().min_lr(), 3e-5f);
  EXPECT_EQ(spec->optimizer().warmup_steps(), 0);
  EXPECT_FLOAT_EQ(spec->optimizer().weight_decay(), 0.1f);
  EXPECT_FLOAT_EQ(spec->optimizer().beta1(), 0.9f);
  EXPECT_FLOAT_EQ(spec->optimizer().beta2(), 0.95f);
  EXPECT_FLOAT_EQ(spec->optimizer().eps(), 1e-8f);
  EXPECT_FLOAT_EQ(spec->optimizer().grad_clip(), 1.0f);
  EXPECT_EQ(spec->recipe().name(), "bf16");
  EXPECT_EQ(spec->eval_interval(), 0);
  EXPECT_EQ(spec->eval_batches(), 4);
  EXPECT_EQ(spec->checkpoint_interval(), 0);
  EXPECT_EQ(spec->seed(), 1337u);
  EXPECT_EQ(spec->log_interval(), 1);
}

TEST(JobSpecResolve, ResolvedSpecResolvesToItself) {
  absl::StatusOr<fp8d::v1::JobSpec> once = ResolveJobSpec(MinimalSpec());
  ASSERT_TRUE(once.ok()) << once.status();
  absl::StatusOr<fp8d::v1::JobSpec> twice = ResolveJobSpec(*once);
  ASSERT_TRUE(twice.ok()) << twice.status();
  EXPECT_EQ(once->SerializeAsString(), twice->SerializeAsString());
}

TEST(JobSpecResolve, MissingStepsIsRequired) {
  fp8d::v1::JobSpec spec = MinimalSpec();
  spec.clear_steps();
  EXPECT_THAT(ResolveJobSpec(spec).status().message(), HasSubstr("steps is required"));
}

TEST(JobSpecResolve, MissingTrainDataIsRequired) {
  fp8d::v1::JobSpec spec = MinimalSpec();
  spec.mutable_data()->clear_train();
  EXPECT_THAT(ResolveJobSpec(spec).status().message(), HasSubstr("data.train is required"));
}

struct RangeCase {
  const char* set;          // override applied to the minimal spec
  const char* message;      // expected in the error
};

class JobSpecRangeTest : public testing::TestWithParam<RangeCase> {};

TEST_P(JobSpecRangeTest, ErrorNamesFieldAndAllowedRange) {
  fp8d::v1::JobSpec spec = MinimalSpec();
  ASSERT_TRUE(ApplySetOverride(&spec, GetParam().set).ok()) << GetParam().set;
  absl::StatusOr<fp8d::v1::JobSpec> resolved = ResolveJobSpec(spec);
  ASSERT_EQ(resolved.status().code(), absl::StatusCode::kInvalidArgument) << GetParam().set;
  EXPECT_THAT(resolved.status().message(), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    JobSpecRanges, JobSpecRangeTest,
    testing::Values(
        RangeCase{"steps=0", "steps = 0 is out of range: allowed >= 1"},
        RangeCase{"batch_size=0", "batch_size = 0 is out of range: allowed 1..4096"},
        RangeCase{"batch_size=4097", "batch_size = 4097 is out of range: allowed 1..4096"},
        RangeCase{"seq_len=1", "seq_len = 1 is out of range: allowed 2..256 (model.max_seq_len)"},
        RangeCase{"seq_len=257", "seq_len = 257 is out of range: allowed 2..256"},
        RangeCase{"grad_accum=0", "grad_accum = 0 is out of range: allowed 1.."},
        RangeCase{"optimizer.lr=0", "optimizer.lr = 0 is out of range: allowed a finite value > 0"},
        RangeCase{"optimizer.lr=-1", "optimizer.lr = -1 is out of range"},
        RangeCase{"optimizer.lr=.nan", "optimizer.lr = nan is out of range"},
        RangeCase{"optimizer.min_lr=1", "optimizer.min_lr = 1 is out of range: allowed 0..0.0003"},
        RangeCase{"optimizer.warmup_steps=11",
                  "optimizer.warmup_steps = 11 is out of range: allowed 0..10 (steps)"},
        RangeCase{"optimizer.beta1=1", "optimizer.beta1 = 1 is out of range: allowed [0, 1)"},
        RangeCase{"optimizer.beta2=-0.1", "optimizer.beta2 = -0.1 is out of range: allowed [0, 1)"},
        RangeCase{"optimizer.eps=0", "optimizer.eps = 0 is out of range"},
        RangeCase{"optimizer.weight_decay=-1", "optimizer.weight_decay = -1 is out of range"},
        RangeCase{"optimizer.grad_clip=-1", "optimizer.grad_clip = -1 is out of range"},
        RangeCase{"data.val_fraction=0", "data.val_fraction = 0 is out of range: allowed 0 < f < 0.5"},
        RangeCase{"data.val_fraction=0.5", "data.val_fraction = 0.5 is out of range"},
        RangeCase{"data.format=csv", "data.format = \"csv\" is unknown: allowed auto, text, bin"},
        RangeCase{"eval_interval=-1", "eval_interval = -1 is out of range: allowed >= 0"},
        RangeCase{"eval_batches=0", "eval_batches = 0 is out of range: allowed >= 1"},
        RangeCase{"checkpoint_interval=-2", "checkpoint_interval = -2 is out of range: allowed >= 0"},
        RangeCase{"log_interval=0", "log_interval = 0 is out of range: allowed >= 1"},
        RangeCase{"model.preset=huge", "model.preset"},
        RangeCase{"model.n_head=5", "model.n_head"},
        RangeCase{"recipe.name=fp4", "recipe.name"}));

}  // namespace
}  // namespace fp8d
