// cfnsr runtime: the C++17 interface. Errors are thrown as cfnsr::Error carrying the same status codes as the C
// interface (cfnsr.h), which wraps this one.
//
//   auto model = cfnsr::Model::open("model.fp32.pt2");
//   const cfnsr::ModelInfo& info = model->info();          // shapes, labels, preprocessing, batch range
//   cfnsr::Result r = model->run(video.data(), video.size(), audio.data(), audio.size(), batch);
//   std::cout << info.labels[r.top1[0]] << " " << r.probabilities[r.top1[0]] << "\n";
//
// A media artifact (`cfnsr export --inputs media`, info.input_kind == "media") takes uint8 face crops and PCM:
//   r = model->run(crops.data(), crops.size(), pcm.data(), pcm.size(), batch);   // const uint8_t*, const float*
// cfnsr/media.hpp (the optional cfnsr::media component) makes them from a file or from camera frames and PCM.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
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
  Media = CFNSR_ERROR_MEDIA,
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
  std::string dtype = "float32";  // "float32", or "uint8" for a media artifact's frames
  std::size_t element_size() const { return dtype == "uint8" ? 1 : 4; }
  // Elements per clip: the product of the non-batch dimensions.
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
  // "features": video is 'video' float32 (N, 3, T, H, W) normalised crops, audio is 'audio' float32 MFCC (N, 13, F).
  // "media" (`cfnsr export --inputs media`, the front end in the graph): video is 'frames' uint8 RGB face crops
  // (N, T, H, W, 3), audio is 'pcm' float32 mono samples (N, L) at the preprocessing's rate, offset and duration.
  std::string input_kind = "features";
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

  // Run a batch of a features artifact; video/audio hold batch x sample_elements floats each. Throws Error.
  Result run(const float* video, std::size_t video_count, const float* audio, std::size_t audio_count,
             int64_t batch);
  // The same into caller-owned buffers of output_capacity floats each; logits or probabilities may be null.
  void run(const float* video, std::size_t video_count, const float* audio, std::size_t audio_count, int64_t batch,
           float* logits, float* probabilities, std::size_t output_capacity);
  // Run a batch of a media artifact: frames holds batch x T x H x W x 3 uint8 RGB face crops, pcm batch x L floats
  // (cfnsr::media prepares both from a file or from camera frames and microphone samples). Throws Error.
  Result run(const uint8_t* frames, std::size_t frames_count, const float* pcm, std::size_t pcm_count,
             int64_t batch);
  void run(const uint8_t* frames, std::size_t frames_count, const float* pcm, std::size_t pcm_count, int64_t batch,
           float* logits, float* probabilities, std::size_t output_capacity);

  class Impl;

 private:
  void run_checked(const void* video, std::size_t video_count, const char* video_type, const float* audio,
                   std::size_t audio_count, int64_t batch, float* logits, float* probabilities,
                   std::size_t output_capacity);
  Result collect(int64_t batch, const std::function<void(float*, float*, std::size_t)>& fill);

  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Library version and the backends compiled in ("aoti", "tensorrt").
CFNSR_API std::string version();
CFNSR_API std::vector<std::string> backends();

// Numerically stable softmax of each row of a (rows x cols) matrix.
CFNSR_API void softmax(const float* logits, int64_t rows, int64_t cols, float* out);

}  // namespace cfnsr
