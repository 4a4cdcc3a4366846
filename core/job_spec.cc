#include "core/job_spec.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/data_loader.h"
#include "core/model_config.h"
#include "core/recipe_config.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "yaml-cpp/yaml.h"

namespace fp8d {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

std::string JsonQuote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += "\"";
  return out;
}

std::string AllowedFields(const Descriptor* d) {
  std::vector<std::string> names;
  for (int i = 0; i < d->field_count(); ++i) names.push_back(d->field(i)->name());
  return absl::StrJoin(names, ", ");
}

// A field may be written as its proto name (snake_case, what job files use) or its JSON name
// (lowerCamelCase, what protobuf's own JSON printer writes).
const FieldDescriptor* FindField(const Descriptor* d, const std::string& key) {
  if (const FieldDescriptor* f = d->FindFieldByName(key)) return f;
  for (int i = 0; i < d->field_count(); ++i)
    if (d->field(i)->json_name() == key) return d->field(i);
  return nullptr;
}

// Converts a YAML tree to JSON text, guided by the message descriptor so that every error names
// the source and the dotted field path, and so that scalars get the JSON type the field needs
// (YAML scalars are untyped: `name: 2024` is a string, `steps: "10"` is a number).
class YamlToJson {
 public:
  explicit YamlToJson(std::string source) : source_(std::move(source)) {}

  absl::Status Message(const YAML::Node& node, const Descriptor* d, const std::string& path,
                       std::string* out) {
    if (node.IsNull()) {
      *out += "{}";
      return absl::OkStatus();
    }
    if (!node.IsMap()) {
      return Error(node, path.empty() ? std::string("the document") : Quoted(path),
                   absl::StrCat("expected a mapping of ", d->name(), " fields (",
                                AllowedFields(d), ")"));
    }
    *out += "{";
    bool first = true;
    std::set<const FieldDescriptor*> seen;
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) {
        return Error(kv.first, path.empty() ? std::string("the document") : Quoted(path),
                     "keys must be plain field names");
      }
      const std::string key = kv.first.Scalar();
      const std::string field_path = path.empty() ? key : absl::StrCat(path, ".", key);
      const FieldDescriptor* f = FindField(d, key);
      if (f == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("unknown field ", Quoted(field_path),
                                                       " in ", source_, Line(kv.first),
                                                       "; allowed: ", AllowedFields(d)));
      }
      if (!seen.insert(f).second) {
        return Error(kv.first, Quoted(field_path), "given more than once");
      }
      if (kv.second.IsNull()) continue;  // `key:` with no value leaves the field unset
      if (!first) *out += ",";
      first = false;
      *out += JsonQuote(f->name());
      *out += ":";
      absl::Status s = Field(kv.second, f, field_path, out);
      if (!s.ok()) return s;
    }
    *out += "}";
    return absl::OkStatus();
  }

 private:
  absl::Status Field(const YAML::Node& node, const FieldDescriptor* f, const std::string& path,
                     std::string* out) {
    if (f->is_map()) return Error(node, Quoted(path), "map fields are not supported in job files");
    if (!f->is_repeated()) return Value(node, f, path, out);
    *out += "[";
    if (node.IsSequence()) {
      for (size_t i = 0; i < node.size(); ++i) {
        if (i > 0) *out += ",";
        absl::Status s = Value(node[i], f, absl::StrCat(path, "[", i, "]"), out);
        if (!s.ok()) return s;
      }
    } else {
      // A single value stands for a one-element list (`include: layers\.0\..*`).
      absl::Status s = Value(node, f, path, out);
      if (!s.ok()) return s;
    }
    *out += "]";
    return absl::OkStatus();
  }

  absl::Status Value(const YAML::Node& node, const FieldDescriptor* f, const std::string& path,
                     std::string* out) {
    if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      return Message(node, f->message_type(), path, out);
    }
    if (!node.IsScalar()) {
      return Error(node, Quoted(path), absl::StrCat("expected a single ", TypeName(f),
                                                    " value, got a ",
                                                    node.IsMap() ? "mapping" : "list"));
    }
    const std::string& text = node.Scalar();
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
        *out += JsonQuote(text);
        return absl::OkStatus();
      case FieldDescriptor::CPPTYPE_BOOL: {
        const std::string lower = absl::AsciiStrToLower(text);
        if (lower != "true" && lower != "false") {
          return Error(node, Quoted(path), absl::StrCat("expected true or false, got `", text, "`"));
        }
        *out += lower;
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_ENUM: {
        int64_t number;
        *out += absl::SimpleAtoi(text, &number) ? absl::StrCat(number) : JsonQuote(text);
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_INT32:
        return Integer(node, path, std::numeric_limits<int32_t>::min(),
                       std::numeric_limits<int32_t>::max(), out);
      case FieldDescriptor::CPPTYPE_INT64:
        return Integer(node, path, std::numeric_limits<int64_t>::min(),
                       std::numeric_limits<int64_t>::max(), out);
      case FieldDescriptor::CPPTYPE_UINT32:
      case FieldDescriptor::CPPTYPE_UINT64: {
        uint64_t v;
        const bool is32 = f->cpp_type() == FieldDescriptor::CPPTYPE_UINT32;
        if (!absl::SimpleAtoi(text, &v) || (is32 && v > std::numeric_limits<uint32_t>::max())) {
          return Error(node, Quoted(path),
                       absl::StrCat("expected an integer in 0..",
                                    is32 ? std::numeric_limits<uint32_t>::max()
                                         : std::numeric_limits<uint64_t>::max(),
                                    ", got `", text, "`"));
        }
        *out += absl::StrCat(v);
        return absl::OkStatus();
      }
      case FieldDescriptor::CPPTYPE_FLOAT:
      case FieldDescriptor::CPPTYPE_DOUBLE:
        return Real(node, path, out);
      case FieldDescriptor::CPPTYPE_MESSAGE:
        break;
    }
    return Error(node, Quoted(path), "unsupported field type");
  }

  absl::Status Integer(const YAML::Node& node, const std::string& path, int64_t lo, int64_t hi,
                       std::string* out) {
    int64_t v;
    if (!absl::SimpleAtoi(node.Scalar(), &v) || v < lo || v > hi) {
      return Error(node, Quoted(path), absl::StrCat("expected an integer in ", lo, "..", hi,
                                                    ", got `", node.Scalar(), "`"));
    }
    *out += absl::StrCat(v);
    return absl::OkStatus();
  }

  absl::Status Real(const YAML::Node& node, const std::string& path, std::string* out) {
    const std::string lower = absl::AsciiStrToLower(node.Scalar());
    double v;
    // YAML spells infinities and NaN `.inf` and `.nan`; protobuf's JSON wants them as strings.
    if (lower == ".inf" || lower == "+.inf" || lower == "inf" || lower == "infinity") {
      *out += "\"Infinity\"";
    } else if (lower == "-.inf" || lower == "-inf" || lower == "-infinity") {
      *out += "\"-Infinity\"";
    } else if (lower == ".nan" || lower == "nan") {
      *out += "\"NaN\"";
    } else if (absl::SimpleAtod(node.Scalar(), &v) && std::isfinite(v)) {
      *out += absl::StrFormat("%.17g", v);
    } else {
      return Error(node, Quoted(path), absl::StrCat("expected a number, got `", node.Scalar(), "`"));
    }
    return absl::OkStatus();
  }

  static std::string TypeName(const FieldDescriptor* f) {
    switch (f->cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING: return "string";
      case FieldDescriptor::CPPTYPE_BOOL: return "boolean";
      case FieldDescriptor::CPPTYPE_ENUM: return "enum";
      case FieldDescriptor::CPPTYPE_FLOAT:
      case FieldDescriptor::CPPTYPE_DOUBLE: return "number";
      default: return "integer";
    }
  }

  static std::string Quoted(const std::string& path) { return absl::StrCat("`", path, "`"); }

  static std::string Line(const YAML::Node& node) {
    const YAML::Mark m = node.Mark();
    if (m.is_null() || m.line < 0) return "";
    return absl::StrCat(" (line ", m.line + 1, ")");
  }

  absl::Status Error(const YAML::Node& node, const std::string& what, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(what, " in ", source_, Line(node), ": ", why));
  }

  std::string source_;
};

absl::StatusOr<fp8d::v1::JobSpec> YamlToSpec(const YAML::Node& root, const std::string& source) {
  std::string json;
  YamlToJson converter(source);
  absl::Status s = converter.Message(root, fp8d::v1::JobSpec::descriptor(), "", &json);
  if (!s.ok()) return s;
  fp8d::v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto parsed = google::protobuf::util::JsonStringToMessage(json, &spec, options);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", std::string(parsed.message().data(), parsed.message().size())));
  }
  return spec;
}

// YAML documents in `text`: a `---` or `...` marker at the start of a line separates them
// (inside block scalars such lines are indented, so a marker in column 0 is always one).
int CountYamlDocuments(std::string_view text_view) {
  const absl::string_view text(text_view.data(), text_view.size());
  int documents = 0;
  bool content = false;  // the current document has content
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    const bool start = absl::StartsWith(line, "---") &&
                       (line.size() == 3 || line[3] == ' ' || line[3] == '\t' || line[3] == '\r');
    const bool end = absl::StartsWith(line, "...") &&
                     (line.size() == 3 || line[3] == ' ' || line[3] == '\t' || line[3] == '\r');
    if (start || end) {
      if (content) ++documents;
      content = false;
      // `--- value` starts a document with content on the marker's line.
      if (start && !absl::StripAsciiWhitespace(line.substr(3)).empty() &&
          !absl::StartsWith(absl::StripAsciiWhitespace(line.substr(3)), "#")) {
        content = true;
      }
      continue;
    }
    const absl::string_view stripped = absl::StripAsciiWhitespace(line);
    if (!stripped.empty() && stripped[0] != '#' && !(line[0] == '%' && !content)) content = true;
  }
  return documents + (content ? 1 : 0);
}

// Offset of the first NUL byte or byte that is not part of valid UTF-8, or -1.
int64_t FirstNonTextByte(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const int64_t n = static_cast<int64_t>(text.size());
  for (int64_t i = 0; i < n;) {
    const unsigned char c = p[i];
    if (c == 0) return i;
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len = 0;
    uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;
    }
    if (i + len > n) return i;
    for (int k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    const uint32_t min_cp = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return -1;
}

// Deepest nesting of [ and { (quotes ignored: an over-estimate, fine for a limit far above any
// real job file), so a file cannot make the YAML parser recurse without bound.
int BracketDepth(std::string_view text) {
  int depth = 0, deepest = 0;
  for (char c : text) {
    if (c == '[' || c == '{') deepest = std::max(deepest, ++depth);
    if ((c == ']' || c == '}') && depth > 0) --depth;
  }
  return deepest;
}

absl::Status Range(const std::string& field, double value, const std::string& allowed) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, " = ", absl::StrFormat("%g", value), " is out of range: allowed ", allowed));
}

}  // namespace

absl::StatusOr<fp8d::v1::JobSpec> ParseJobText(std::string_view text,
                                               std::string_view source_view) {
  const std::string source_name(source_view);
  if (text.size() > kMaxJobFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(source_name, " is ", text.size(),
                                                   " bytes: a job file is at most ",
                                                   kMaxJobFileBytes, " bytes"));
  }
  if (const int64_t bad = FirstNonTextByte(text); bad >= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s is not a text file (byte 0x%02x at offset %d is %s): a job file is YAML or JSON "
        "text in UTF-8",
        source_name, static_cast<unsigned char>(text[bad]), bad,
        text[bad] == '\0' ? "NUL" : "not valid UTF-8"));
  }
  if (const int depth = BracketDepth(text); depth > kMaxJobFileNesting) {
    return absl::InvalidArgumentError(absl::StrCat(source_name, " nests brackets ", depth,
                                                   " levels deep: allowed at most ",
                                                   kMaxJobFileNesting));
  }
  if (const int documents = CountYamlDocuments(text); documents > 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        source_name, " holds ", documents,
        " YAML documents (separated by `---`): a job file holds one job"));
  }
  // YAML::Load, not LoadAll: yaml-cpp 0.7's LoadAll allocates without end on some malformed
  // flow mappings (found by tests/core/job_file_fuzz_test.cc); documents are counted above.
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(source_name, " (line ", e.mark.line + 1,
                                                   ", column ", e.mark.column + 1,
                                                   "): not valid YAML or JSON: ", e.msg));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_name, ": cannot be parsed as YAML or JSON (", e.what(), ")"));
  }
  if (root.IsNull()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source_name, " is empty: a job file is a YAML or JSON mapping of JobSpec fields (name, "
        "model, data, steps, ...)"));
  }
  return YamlToSpec(root, source_name);
}

absl::StatusOr<fp8d::v1::JobSpec> ParseJobFile(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("job file ", path, " is a directory"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read job file ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string name = path.substr(path.find_last_of('/') + 1);
  return ParseJobText(buf.str(), name);
}

absl::Status ApplySetOverride(fp8d::v1::JobSpec* spec, std::string_view override_view) {
  const std::string dotted_eq_value(override_view);
  const std::string source = absl::StrCat("--set ", dotted_eq_value);
  const size_t eq = dotted_eq_value.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": expected key=value, e.g. optimizer.lr=1e-3"));
  }
  const std::string key(absl::StripAsciiWhitespace(dotted_eq_value.substr(0, eq)));
  const std::string value(dotted_eq_value.substr(eq + 1));
  const std::vector<std::string> parts = absl::StrSplit(key, '.');

  // The spec as a YAML tree (JSON is YAML), with the override written into it.
  std::string json;
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  const auto printed = google::protobuf::util::MessageToJsonString(*spec, &json, print);
  if (!printed.ok()) return absl::InternalError("cannot print the job spec as JSON");
  YAML::Node root = YAML::Load(json);
  if (!root.IsMap()) root = YAML::Node(YAML::NodeType::Map);

  const Descriptor* d = fp8d::v1::JobSpec::descriptor();
  YAML::Node cur;
  cur.reset(root);
  std::string path;
  for (size_t i = 0; i < parts.size(); ++i) {
    path = i == 0 ? parts[i] : absl::StrCat(path, ".", parts[i]);
    const FieldDescriptor* f = d == nullptr ? nullptr : FindField(d, parts[i]);
    if (f == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown field `", path, "` in ", source,
                       d == nullptr ? std::string()
                                    : absl::StrCat("; allowed: ", AllowedFields(d))));
    }
    const bool last = i + 1 == parts.size();
    if (!last) {
      if (f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE || f->is_repeated()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "`", path, "` in ", source, " is a single value, not a group of fields"));
      }
      if (!cur[f->name()] || !cur[f->name()].IsMap()) {
        cur[f->name()] = YAML::Node(YAML::NodeType::Map);
      }
      YAML::Node next = cur[f->name()];
      cur.reset(next);
      d = f->message_type();
      continue;
    }
    if (cur[f->name()]) cur.remove(f->name());
    if (value.empty()) break;  // clears the field
    YAML::Node v;
    const bool is_string = f->cpp_type() == FieldDescriptor::CPPTYPE_STRING;
    if (is_string && !(f->is_repeated() && absl::StartsWith(value, "["))) {
      // Strings are taken verbatim: regexes such as `a{2}` are not YAML.
      v = YAML::Node(value);
    } else {
      try {
        v = YAML::Load(value);
      } catch (const YAML::Exception& e) {
        return absl::InvalidArgumentError(
            absl::StrCat("`", path, "` in ", source, ": value is not valid YAML: ", e.msg));
      }
    }
    cur[f->name()] = v;
  }

  absl::StatusOr<fp8d::v1::JobSpec> updated = YamlToSpec(root, source);
  if (!updated.ok()) return updated.status();
  *spec = *std::move(updated);
  return absl::OkStatus();
}

absl::StatusOr<fp8d::v1::JobSpec> ResolveJobSpec(const fp8d::v1::JobSpec& in) {
  fp8d::v1::JobSpec spec = in;

  absl::StatusOr<ModelConfig> model = ResolveModelConfig(spec.model());
  if (!model.ok()) return model.status();
  *spec.mutable_model() = ToProto(*model);

  if (!spec.has_steps()) {
    return absl::InvalidArgumentError("steps is required: the number of optimizer steps, >= 1");
  }
  if (spec.steps() < 1) return Range("steps", spec.steps(), ">= 1");

  if (!spec.has_batch_size()) spec.set_batch_size(kDefaultBatchSize);
  if (spec.batch_size() < 1 || spec.batch_size() > kMaxBatchSize)
    return Range("batch_size", spec.batch_size(), absl::StrCat("1..", kMaxBatchSize));
  if (!spec.has_seq_len()) spec.set_seq_len(std::min(kDefaultSeqLen, model->max_seq_len));
  if (spec.seq_len() < 2 || spec.seq_len() > model->max_seq_len)
    return Range("seq_len", spec.seq_len(),
                 absl::StrCat("2..", model->max_seq_len, " (model.max_seq_len)"));
  if (!spec.has_grad_accum()) spec.set_grad_accum(1);
  if (spec.grad_accum() < 1 || spec.grad_accum() > kMaxGradAccum)
    return Range("grad_accum", spec.grad_accum(), absl::StrCat("1..", kMaxGradAccum));

  fp8d::v1::DataSpec* data = spec.mutable_data();
  if (data->train().empty()) {
    return absl::InvalidArgumentError(
        "data.train is required: a text file, an llm.c .bin token shard, or a glob of shards");
  }
  if (data->format().empty()) data->set_format("auto");
  if (data->format() != "auto" && data->format() != "text" && data->format() != "bin") {
    return absl::InvalidArgumentError(absl::StrCat("data.format = \"", data->format(),
                                                   "\" is unknown: allowed auto, text, bin"));
  }
  if (!data->has_val_fraction()) data->set_val_fraction(kDefaultValFraction);
  if (!(data->val_fraction() > 0.f && data->val_fraction() < 0.5f))
    return Range("data.val_fraction", data->val_fraction(), "0 < f < 0.5");

  fp8d::v1::OptimizerSpec* opt = spec.mutable_optimizer();
  if (!opt->has_lr()) opt->set_lr(kDefaultLr);
  if (!(opt->lr() > 0.f) || !std::isfinite(opt->lr()))
    return Range("optimizer.lr", opt->lr(), "a finite value > 0");
  if (!opt->has_min_lr()) opt->set_min_lr(opt->lr() / 10.f);
  if (!(opt->min_lr() >= 0.f && opt->min_lr() <= opt->lr()))
    return Range("optimizer.min_lr", opt->min_lr(),
                 absl::StrFormat("0..%g (optimizer.lr)", opt->lr()));
  if (!opt->has_warmup_steps()) opt->set_warmup_steps(0);
  if (opt->warmup_steps() < 0 || opt->warmup_steps() > spec.steps())
    return Range("optimizer.warmup_steps", opt->warmup_steps(),
                 absl::StrCat("0..", spec.steps(), " (steps)"));
  if (!opt->has_weight_decay()) opt->set_weight_decay(0.1f);
  if (!(opt->weight_decay() >= 0.f) || !std::isfinite(opt->weight_decay()))
    return Range("optimizer.weight_decay", opt->weight_decay(), "a finite value >= 0");
  if (!opt->has_beta1()) opt->set_beta1(0.9f);
  if (!(opt->beta1() >= 0.f && opt->beta1() < 1.f))
    return Range("optimizer.beta1", opt->beta1(), "[0, 1)");
  if (!opt->has_beta2()) opt->set_beta2(0.95f);
  if (!(opt->beta2() >= 0.f && opt->beta2() < 1.f))
    return Range("optimizer.beta2", opt->beta2(), "[0, 1)");
  if (!opt->has_eps()) opt->set_eps(1e-8f);
  if (!(opt->eps() > 0.f) || !std::isfinite(opt->eps()))
    return Range("optimizer.eps", opt->eps(), "a finite value > 0");
  if (!opt->has_grad_clip()) opt->set_grad_clip(1.0f);
  if (!(opt->grad_clip() >= 0.f) || !std::isfinite(opt->grad_clip()))
    return Range("optimizer.grad_clip", opt->grad_clip(), "a finite value >= 0 (0 disables)");

  fp8d::v1::Recipe recipe = spec.recipe();
  if (recipe.name().empty()) recipe.set_name("bf16");
  absl::StatusOr<RecipeConfig> resolved_recipe = ResolveRecipe(recipe);
  if (!resolved_recipe.ok()) return resolved_recipe.status();
  *spec.mutable_recipe() = ToProto(*resolved_recipe);

  if (!spec.has_eval_interval()) spec.set_eval_interval(0);
  if (spec.eval_interval() < 0)
    return Range("eval_interval", spec.eval_interval(), ">= 0 (0 = only at the end)");
  if (!spec.has_eval_batches()) spec.set_eval_batches(kDefaultEvalBatches);
  if (spec.eval_batches() < 1) return Range("eval_batches", spec.eval_batches(), ">= 1");
  if (!spec.has_checkpoint_interval()) spec.set_checkpoint_interval(0);
  if (spec.checkpoint_interval() < 0)
    return Range("checkpoint_interval", spec.checkpoint_interval(), ">= 0 (0 = only at the end)");
  if (!spec.has_seed()) spec.set_seed(kDefaultSeed);
  if (!spec.has_log_interval()) spec.set_log_interval(1);
  if (spec.log_interval() < 1) return Range("log_interval", spec.log_interval(), ">= 1");
  return spec;
}

}  // namespace fp8d
