#include <algorithm>
#include <cmath>
#include <fstream>
#include <mutex>

#include "internal.hpp"

#ifndef CFNSR_VERSION
#define CFNSR_VERSION "unknown"
#endif

namespace cfnsr {

class Model::Impl {
 public:
  ModelInfo info;
  std::unique_ptr<detail::Backend> backend;
  std::mutex mutex;
  std::vector<float> scratch;  // logits when the caller wants probabilities only
};

namespace {

std::string lower_suffix(const std::string& path) {
  auto slash = path.find_last_of('/');
  auto dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  std::string s = path.substr(dot);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string shape_text(const TensorInfo& t, int64_t batch = -1) {
  std::string shape = "[" + (batch < 0 ? std::string("N") : std::to_string(batch));
  for (std::size_t i = 1; i < t.shape.size(); ++i) shape += ", " + std::to_string(t.shape[i]);
  return shape + "]";
}

void check_size(const char* what, std::size_t got, std::size_t per_sample, int64_t batch, const TensorInfo& t) {
  const std::size_t expected = per_sample * static_cast<std::size_t>(batch);
  if (got == expected) return;
  throw Error(Status::InputSize, std::string("input '") + what + "': got " + std::to_string(got) + " " +
                                     (t.dtype == "uint8" ? "bytes" : "floats") + ", expected " +
                                     std::to_string(expected) + " for batch " + std::to_string(batch) + " (shape " +
                                     shape_text(t, batch) + ", " + t.dtype + " " + t.layout + ")");
}

}  // namespace

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

std::unique_ptr<Model> Model::open(const std::string& path, const Options& options) {
  if (path.empty()) throw Error(Status::InvalidArgument, "the artifact path is empty");
  std::ifstream probe(path, std::ios::binary);
  if (!probe) throw Error(Status::FileNotFound, path + " does not exist or cannot be read");
  char head[4] = {0, 0, 0, 0};
  probe.read(head, 4);
  const bool zip = probe.gcount() == 4 && head[0] == 'P' && head[1] == 'K';
  const auto suffix = lower_suffix(path);
  detail::Opened opened;
  try {
    if (suffix == ".pt2") {
      if (!zip)
        throw Error(Status::InvalidArtifact, path + " is not an AOTInductor package (a .pt2 is a zip archive; the "
                                                    "file is corrupt, truncated or misnamed)");
      opened = detail::open_aoti(path, options);
    } else if (suffix == ".engine" || suffix == ".plan") {
      const auto sidecar = detail::read_sidecar(path);  // checked before any TensorRT code runs
      opened = detail::open_tensorrt(path, options, sidecar, detail::engine_info(sidecar, path));
    } else if (suffix == ".onnx") {
      throw Error(Status::BackendUnavailable,
                  path + ": the C++ runtime runs TensorRT engines and AOTInductor packages, not ONNX files. Build an "
                         "engine on the target (`cfnsr build " + path + "`) or export a package "
                         "(`cfnsr export CHECKPOINT --format pt2`)");
    } else {
      throw Error(Status::InvalidArtifact,
                  path + ": unknown artifact type '" + suffix + "'; expected .pt2, .engine or .plan");
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(Status::InvalidArtifact, path + ": malformed metadata (" + e.what() + ")");
  }
  opened.info.path = path;
  if (opened.info.min_batch < 1 || opened.info.max_batch < opened.info.min_batch)
    throw Error(Status::InvalidArtifact, path + ": invalid batch range " + std::to_string(opened.info.min_batch) +
                                             ".." + std::to_string(opened.info.max_batch));
  auto impl = std::make_unique<Impl>();
  impl->info = std::move(opened.info);
  impl->backend = std::move(opened.backend);
  return std::unique_ptr<Model>(new Model(std::move(impl)));
}

const ModelInfo& Model::info() const noexcept { return impl_->info; }

Result Model::collect(int64_t batch, const std::function<void(float*, float*, std::size_t)>& fill) {
  Result r;
  r.batch = batch;
  r.num_classes = impl_->info.logits.shape[1];
  const std::size_t n = static_cast<std::size_t>(std::max<int64_t>(batch, 0) * r.num_classes);
  r.logits.resize(n);
  r.probabilities.resize(n);
  fill(r.logits.data(), r.probabilities.data(), n);
  r.top1.resize(static_cast<std::size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    const float* row = r.logits.data() + b * r.num_classes;
    r.top1[static_cast<std::size_t>(b)] = std::max_element(row, row + r.num_classes) - row;
  }
  return r;
}

Result Model::run(const float* video, std::size_t video_count, const float* audio, std::size_t audio_count,
                  int64_t batch) {
  return collect(batch, [&](float* logits, float* probabilities, std::size_t n) {
    run(video, video_count, audio, audio_count, batch, logits, probabilities, n);
  });
}

Result Model::run(const uint8_t* frames, std::size_t frames_count, const float* pcm, std::size_t pcm_count,
                  int64_t batch) {
  return collect(batch, [&](float* logits, float* probabilities, std::size_t n) {
    run(frames, frames_count, pcm, pcm_count, batch, logits, probabilities, n);
  });
}

void Model::run(const float* video, std::size_t video_count, const float* audio, std::size_t audio_count,
                int64_t batch, float* logits, float* probabilities, std::size_t output_capacity) {
  run_checked(video, video_count, "float32", audio, audio_count, batch, logits, probabilities, output_capacity);
}

void Model::run(const uint8_t* frames, std::size_t frames_count, const float* pcm, std::size_t pcm_count,
                int64_t batch, float* logits, float* probabilities, std::size_t output_capacity) {
  run_checked(frames, frames_count, "uint8", pcm, pcm_count, batch, logits, probabilities, output_capacity);
}

void Model::run_checked(const void* video, std::size_t video_count, const char* video_type, const float* audio,
                        std::size_t audio_count, int64_t batch, float* logits, float* probabilities,
                        std::size_t output_capacity) {
  const ModelInfo& info = impl_->info;
  if (info.video.dtype != video_type) {
    if (info.input_kind == "media")
      throw Error(Status::InvalidArgument,
                  info.path + " is a media artifact: it takes uint8 RGB face crops 'frames' " + shape_text(info.video) +
                      " and PCM 'pcm' " + shape_text(info.audio) + " (run with const uint8_t* frames; "
                      "cfnsr::media prepares them), not float features");
    throw Error(Status::InvalidArgument,
                info.path + " is a features artifact: it takes float32 'video' " + shape_text(info.video) +
                    " and MFCC 'audio' " + shape_text(info.audio) + ", not uint8 frames and PCM (export the "
                    "checkpoint with `cfnsr export --inputs media` for those)");
  }
  const char* video_name = info.video.name.c_str();
  const char* audio_name = info.audio.name.c_str();
  if (video == nullptr || audio == nullptr)
    throw Error(Status::InvalidArgument, std::string(video_name) + " and " + audio_name + " must not be null");
  if (logits == nullptr && probabilities == nullptr)
    throw Error(Status::InvalidArgument, "pass a logits or a probabilities buffer (or both)");
  if (batch < info.min_batch || batch > info.max_batch)
    throw Error(Status::InputSize, "batch " + std::to_string(batch) + " is outside the range " +
                                       std::to_string(info.min_batch) + ".." + std::to_string(info.max_batch) +
                                       " that " + info.path + " accepts");
  check_size(video_name, video_count, info.video.sample_elements(), batch, info.video);
  check_size(audio_name, audio_count, info.audio.sample_elements(), batch, info.audio);
  const int64_t classes = info.logits.shape[1];
  const std::size_t needed = static_cast<std::size_t>(batch * classes);
  if (output_capacity < needed)
    throw Error(Status::OutputSize, "output buffers hold " + std::to_string(output_capacity) + " floats; batch " +
                                        std::to_string(batch) + " x " + std::to_string(classes) +
                                        " classes needs " + std::to_string(needed));
  std::lock_guard<std::mutex> lock(impl_->mutex);
  float* out = logits;
  if (out == nullptr) {
    impl_->scratch.resize(needed);
    out = impl_->scratch.data();
  }
  impl_->backend->infer(video, audio, batch, out);
  if (probabilities != nullptr) softmax(out, batch, classes, probabilities);
}

std::string version() { return CFNSR_VERSION; }

std::vector<std::string> backends() {
  std::vector<std::string> out;
#ifdef CFNSR_HAVE_AOTI
  out.emplace_back("aoti");
#endif
#ifdef CFNSR_HAVE_TENSORRT
  out.emplace_back("tensorrt");
#endif
  return out;
}

void softmax(const float* logits, int64_t rows, int64_t cols, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = logits + r * cols;
    float* o = out + r * cols;
    const float top = *std::max_element(in, in + cols);
    double sum = 0.0;
    for (int64_t c = 0; c < cols; ++c) sum += std::exp(static_cast<double>(in[c]) - top);
    for (int64_t c = 0; c < cols; ++c) o[c] = static_cast<float>(std::exp(static_cast<double>(in[c]) - top) / sum);
  }
}

namespace detail {
#ifndef CFNSR_HAVE_AOTI
Opened open_aoti(const std::string& path, const Options&) {
  throw Error(Status::BackendUnavailable, path + ": this cfnsr_runtime was built without libtorch, so it cannot run "
                                                 "AOTInductor packages (configure with CFNSR_WITH_AOTI=ON)");
}
#endif
#ifndef CFNSR_HAVE_TENSORRT
Opened open_tensorrt(const std::string& path, const Options&, const nlohmann::json&, ModelInfo) {
  throw Error(Status::BackendUnavailable, path + ": this cfnsr_runtime was built without TensorRT, so it cannot run "
                                                 "engines (configure on a machine with TensorRT, CFNSR_WITH_TENSORRT=ON)");
}
#endif
}  // namespace detail

}  // namespace cfnsr
