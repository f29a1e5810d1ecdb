#include <fstream>
#include <sstream>
#include <unordered_map>

#include "internal.hpp"

namespace cfnsr::detail {
namespace {

// A metadata value as text: strings as they are, anything else (a version written as a number) as JSON.
std::string text(const nlohmann::json& meta, const char* key, const std::string& fallback) {
  if (!meta.contains(key)) return fallback;
  const auto& v = meta[key];
  return v.is_string() ? v.get<std::string>() : v.dump();
}

[[noreturn]] void bad(const std::string& where, const std::string& what) {
  throw Error(Status::InvalidArtifact, where + ": " + what);
}

TensorInfo tensor(const nlohmann::json& inputs, const std::string& name, std::size_t rank, const std::string& where,
                  const std::string& dtype = "float32") {
  for (const auto& entry : inputs) {
    if (!entry.is_object() || text(entry, "name", "") != name) continue;
    TensorInfo t;
    t.name = name;
    t.layout = text(entry, "layout", "");
    t.dtype = text(entry, "dtype", "float32");
    if (t.dtype != dtype)
      bad(where, "tensor '" + name + "' is " + t.dtype + "; this runtime takes it as " + dtype);
    const auto& shape = entry.at("shape");
    for (std::size_t i = 0; i < shape.size(); ++i) {
      if (shape[i].is_number_integer() && shape[i].get<int64_t>() > 0) {
        t.shape.push_back(i == 0 ? -1 : shape[i].get<int64_t>());  // axis 0 is the batch, fixed or not
      } else if (i == 0) {
        t.shape.push_back(-1);
      } else {
        bad(where, "tensor '" + name + "' has a dynamic axis " + std::to_string(i) + " (" + shape[i].dump() +
                       "); only the batch axis may be dynamic");
      }
    }
    if (t.shape.size() != rank)
      bad(where, "tensor '" + name + "' has rank " + std::to_string(t.shape.size()) + ", expected " +
                     std::to_string(rank));
    return t;
  }
  bad(where, "its metadata describes no tensor '" + name + "'");
}

}  // namespace

void parse_metadata(const nlohmann::json& meta, const std::string& where, ModelInfo& info) {
  if (!meta.is_object() || !meta.contains("inputs"))
    bad(where, "no cfnsr metadata (write it with `cfnsr export`; an engine needs the sidecar from `cfnsr build`)");
  try {
    info.schema = meta.contains("schema") ? std::stoi(meta["schema"].is_string() ? meta["schema"].get<std::string>()
                                                                                   : meta["schema"].dump())
                                          : 1;
  } catch (const std::exception&) {
    bad(where, "metadata schema is not a number: " + meta["schema"].dump());
  }
  info.cfnsr_version = text(meta, "version", "unknown");
  info.input_kind = text(meta, "input_kind", "features");
  if (info.input_kind != "features" && info.input_kind != "media")
    throw Error(Status::VersionMismatch, where + ": input kind '" + info.input_kind + "' (written by cfnsr " +
                                             info.cfnsr_version + "); this runtime (cfnsr_runtime " + version() +
                                             ") runs 'features' and 'media' artifacts");
  if (info.schema > kMetadataSchema || info.schema < 1)
    throw Error(Status::VersionMismatch,
                where + ": metadata schema " + std::to_string(info.schema) + " (written by cfnsr " +
                    info.cfnsr_version + "); this runtime (cfnsr_runtime " + version() + ") reads schema " +
                    std::to_string(kMetadataSchema) + ". Use a cfnsr_runtime as new as the cfnsr that exported it");
  try {
    info.precision = text(meta, "precision", "fp32");
    const auto& inputs = meta.at("inputs");
    if (info.input_kind == "media") {
      info.video = tensor(inputs, "frames", 5, where, "uint8");
      info.audio = tensor(inputs, "pcm", 2, where);
      if (info.video.shape[4] != 3) bad(where, "tensor 'frames' must end in 3 RGB channels (N, T, H, W, 3)");
    } else {
      info.video = tensor(inputs, "video", 5, where);
      info.audio = tensor(inputs, "audio", 3, where);
    }
    info.logits = tensor(inputs, "logits", 2, where);
    info.labels.clear();
    if (meta.contains("labels"))
      for (const auto& l : meta["labels"]) info.labels.push_back(l.get<std::string>());
    if (info.labels.size() != static_cast<std::size_t>(info.logits.shape[1]))
      bad(where, std::to_string(info.labels.size()) + " labels for " + std::to_string(info.logits.shape[1]) +
                     " classes");
    info.preprocess_json = meta.contains("preprocess") ? meta["preprocess"].dump() : "{}";
    info.metadata_json = meta.dump();
  } catch (const nlohmann::json::exception& e) {
    bad(where, std::string("malformed cfnsr metadata (") + e.what() + ")");
  }
}

nlohmann::json read_sidecar(const std::string& engine_path) {
  const std::string path = engine_path + ".json";
  std::ifstream in(path);
  if (!in)
    throw Error(Status::FileNotFound, engine_path + " has no sidecar " + path + ": build engines with `cfnsr build` "
                                      "(the sidecar records the TensorRT version, GPU and metadata)");
  auto side = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (side.is_discarded()) bad(path, "not valid JSON");
  if (!side.is_object() || side.value("format", "") != "cfnsr-engine") bad(path, "not a cfnsr engine sidecar");
  return side;
}

ModelInfo engine_info(const nlohmann::json& sidecar, const std::string& engine_path) {
  const std::string where = engine_path + ".json";
  ModelInfo info;
  parse_metadata(sidecar.contains("cfnsr") ? sidecar["cfnsr"] : nlohmann::json(), where, info);
  info.backend = "tensorrt";
  info.device = "cuda";
  try {
    const auto& batch = sidecar.at("profile").at("batch");
    info.min_batch = batch.at(0).get<int64_t>();
    info.max_batch = batch.at(2).get<int64_t>();
    sidecar.at("tensorrt_version").get<std::string>();
    sidecar.at("gpu").get<std::string>();
    sidecar.at("compute_capability").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    bad(where, std::string("incomplete sidecar (") + e.what() + ")");
  }
  return info;
}

nlohmann::json decode_prefixed(const std::unordered_map<std::string, std::string>& entries) {
  static const std::string prefix = "cfnsr.";
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, value] : entries) {
    if (key.compare(0, prefix.size(), prefix) != 0) continue;
    auto parsed = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
    out[key.substr(prefix.size())] = parsed.is_discarded() ? nlohmann::json(value) : parsed;
  }
  return out;
}

}  // namespace cfnsr::detail
