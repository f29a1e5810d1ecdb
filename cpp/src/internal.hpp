// Internal: the backend interface and the metadata contract shared by the backends.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <string>

#include "cfnsr/runtime.hpp"

namespace cfnsr::detail {

// The metadata schema this runtime reads (cfnsr.export.onnx_graph.METADATA_SCHEMA).
constexpr int kMetadataSchema = 1;

class Backend {
 public:
  virtual ~Backend() = default;
  // video and audio are checked by the caller: batch within the artifact's range, sizes exact, element types those
  // of info.video / info.audio (float32, or uint8 for a media artifact's frames).
  virtual void infer(const void* video, const float* audio, int64_t batch, float* logits) = 0;
};

struct Opened {
  ModelInfo info;
  std::unique_ptr<Backend> backend;
};

// Fill info from the cfnsr metadata object (keys without the "cfnsr." prefix, values decoded); where names the
// artifact in messages. Throws Error(InvalidArtifact | VersionMismatch).
void parse_metadata(const nlohmann::json& meta, const std::string& where, ModelInfo& info);

// Decode "cfnsr.*" string entries (JSON-encoded values) into one object.
nlohmann::json decode_prefixed(const std::unordered_map<std::string, std::string>& entries);

// Backends. Each throws Error; an opener whose backend was not compiled in throws BackendUnavailable.
Opened open_aoti(const std::string& path, const Options& options);
// The sidecar MODEL.engine.json of an engine (FileNotFound, InvalidArtifact), and the ModelInfo it describes
// (batch range from its optimisation profile).
nlohmann::json read_sidecar(const std::string& engine_path);
ModelInfo engine_info(const nlohmann::json& sidecar, const std::string& engine_path);
Opened open_tensorrt(const std::string& path, const Options& options, const nlohmann::json& sidecar, ModelInfo info);

}  // namespace cfnsr::detail
