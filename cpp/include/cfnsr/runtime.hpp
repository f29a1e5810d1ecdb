// cfnsr runtime: the C++17 interface. Errors are thrown as cfnsr::Error carrying the same status codes as the C
// interface (cfnsr.h), which wraps this one.
//
//   auto model = cfnsr::Model::open("model.fp32.pt2");
//   const cfnsr::ModelInfo& info = model->info();          // shapes, labels, preprocessing, batch range
//   cfnsr::Result r = model->run(video.data(), video.size(), audio.data(), audio.size(), batch);
//   std::cout << info.labels[r.top1[0]] << " " << r.probabilities[r.top1[0]] << "\n";
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cfnsr/cfnsr.h"

namespace cfnsr {

enum class Status : int {
  Ok = CFNSR_OK,
  InvalidArgument = CFNSR_ERROR_INVALID_ARGUMENT,
  FileNotFound = CFNSR_ERROR_FILE_NOT_FOUND,
  InvalidArtifact = CFNSR_ERROR_INVALID_ARTIFACT,
  VersionMismatch = CFNSR_ERROR_VERSION_MISMATCH,
  BackendUnavailable = CFNSR_ERROR_BACKEND_UNAVAILABLE,
  InputSize = CFNSR_ERROR_INPUT_SIZE,
  OutputSize = CFNSR_ERROR_OUTPUT_SIZE,
  Runtime = CFNSR_ERROR_RUNTIME,
  Internal = CFNSR_ERROR_INTERNAL,
};

class CFNSR_API Error : public std::runtime_error {
 public:
  Error(Status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  Status status() const noexcept { return status_; }

 private:
  Status status_;
};

// One input or output tensor: shape with -1 for the batch axis.
struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  std::string layout;
  // Floats per clip: the product of the non-batch dimensions.
  std::size_t sample_elements() const {
    std::size_t n = 1;
    for (std::size_t i = 1; i < shape.size(); ++i) n *= static_cast<std::size_t>(shape[i]);
    return n;
  }
};

// What the artifact says about itself (ONNX metadata_props, pt2 package metadata or the engine's sidecar JSON).
struct ModelInfo {
  std::string path;
  std::string backend;        // "aoti" or "tensorrt"
  std::string device;         // "cpu" or "cuda"
  std::string precision;      // "fp32", "fp16", "int8"
  std::string cfnsr_version;  // the cfnsr that wrote the artifact
  int schema = 1;             // metadata schema version
  std::vector<std::string> labels;
  TensorInfo video, audio, logits;
  int64_t min_batch = 1, max_batch = 1;
  std::string preprocess_json;  // the preprocessing the inputs must follow
  std::string metadata_json;    // all cfnsr metadata
};

struct Options {
  int device_index = 0;  // CUDA device for engines and CUDA packages
  int num_threads = 0;   // CPU threads for CPU packages; 0 keeps the library default
};

struct Result {
  int64_t batch = 0;
  int64_t num_classes = 0;
  std::vector<float> logits;         // batch x num_classes, row-major
  std::vector<float> probabilities;  // softmax of logits, per row
  std::vector<int64_t> top1;         // argmax per row
};

class CFNSR_API Model {
 public:
  // Open a .pt2 (AOTInductor) or .engine/.plan (TensorRT) artifact. Throws Error.
  static std::unique_ptr<Model> open(const std::string& path, const Options& options = Options());
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelInfo& info() const noexcept;

  // Run a batch; video/audio hold batch x sample_elements floats each. Throws Error.
  Result run(const float* video, std::size_t video_count, const float* audio, std::size_t audio_count,
             int64_t batch);
  // The same into caller-owned buffers of output_capacity floats each; logits or probabilities may be null.
  void run(const float* video, std::size_t video_count, const float* audio, std::size_t audio_count, int64_t batch,
           float* logits, float* probabilities, std::size_t output_capacity);

  class Impl;

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Library version and the backends compiled in ("aoti", "tensorrt").
CFNSR_API std::string version();
CFNSR_API std::vector<std::string> backends();

// Numerically stable softmax of each row of a (rows x cols) matrix.
CFNSR_API void softmax(const float* logits, int64_t rows, int64_t cols, float* out);

}  // namespace cfnsr
