// The TensorRT backend: engines built by `cfnsr build` (TensorRT 10.x on JetPack 6/7, 10.x/11.x on desktops).
//
// The engine is strongly typed (its precision comes from the ONNX graph), so nothing here chooses a precision:
// deserialise, check the sidecar against this TensorRT and GPU, allocate device buffers for the profile's largest
// batch, and per call set the batch, copy in, enqueueV3, copy out.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "internal.hpp"

namespace cfnsr::detail {
namespace {

class Logger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* msg) noexcept override {
    if (severity <= Severity::kERROR) last_error = msg;
    if (severity <= Severity::kWARNING) std::cerr << "[cfnsr_runtime/TensorRT] " << msg << "\n";
  }
  std::string last_error;
};

// NV_TENSORRT_VERSION / getInferLibVersion(): major * 10000 + minor * 100 + patch (TensorRT 10 and later).
std::string version_string(int32_t v) {
  return std::to_string(v / 10000) + "." + std::to_string((v / 100) % 100) + "." + std::to_string(v % 100);
}

// "10.3.0" -> {10, 3, 0}; stops at the first part that is not a number.
std::vector<int> version_parts(const std::string& v) {
  std::vector<int> out;
  std::size_t i = 0;
  while (i < v.size() && out.size() < 3) {
    std::size_t j = i;
    while (j < v.size() && v[j] >= '0' && v[j] <= '9') ++j;
    if (j == i) break;
    out.push_back(std::stoi(v.substr(i, j - i)));
    i = j + 1;
  }
  return out;
}

// A version-compatible engine runs on the TensorRT it was built with or a newer one of the same major version.
bool forward_compatible(const std::string& built, const std::string& here) {
  const auto b = version_parts(built), h = version_parts(here);
  return !b.empty() && !h.empty() && b[0] == h[0] && !(h < b);
}

std::string major_minor_patch(const std::string& v) {
  std::size_t dots = 0, i = 0;
  for (; i < v.size(); ++i)
    if (v[i] == '.' && ++dots == 3) break;
  return v.substr(0, i);
}

void cuda_check(cudaError_t err, const std::string& what, Status status = Status::Runtime) {
  if (err != cudaSuccess) throw Error(status, what + ": " + cudaGetErrorString(err));
}

std::string dims_string(const nvinfer1::Dims& d) {
  std::string s = "[";
  for (int i = 0; i < d.nbDims; ++i) s += (i ? ", " : "") + std::to_string(d.d[i]);
  return s + "]";
}

struct CudaFree {
  void operator()(void* p) const noexcept { cudaFree(p); }
};
using DeviceBuffer = std::unique_ptr<void, CudaFree>;

struct StreamDestroy {
  void operator()(CUstream_st* s) const noexcept { cudaStreamDestroy(s); }
};

class TensorRTBackend final : public Backend {
 public:
  TensorRTBackend(const std::string& path, const Options& options, const nlohmann::json& side, ModelInfo& info)
      : path_(path), device_(options.device_index) {
    int count = 0;
    cuda_check(cudaGetDeviceCount(&count), "no CUDA device is usable", Status::BackendUnavailable);
    if (device_ < 0 || device_ >= count)
      throw Error(Status::InvalidArgument, "device_index " + std::to_string(device_) + " is not one of the " +
                                               std::to_string(count) + " CUDA devices here");
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    check_compatible(side);

    std::ifstream in(path, std::ios::binary);
    std::vector<char> plan((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (plan.empty()) throw Error(Status::InvalidArtifact, path + " is empty");
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) throw Error(Status::BackendUnavailable, "TensorRT could not create a runtime: " + logger_.last_error);
    if (side.value("version_compatible", false)) runtime_->setEngineHostCodeAllowed(true);
    engine_.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
    if (!engine_)
      throw Error(Status::InvalidArtifact, "TensorRT cannot deserialise " + path + " (corrupt or truncated file?): " +
                                               logger_.last_error);
    context_.reset(engine_->createExecutionContext());
    if (!context_) throw Error(Status::Runtime, "TensorRT could not create an execution context: " + logger_.last_error);

    video_name_ = info.video.name;
    audio_name_ = info.audio.name;
    bind(info.video, nvinfer1::TensorIOMode::kINPUT, info);
    bind(info.audio, nvinfer1::TensorIOMode::kINPUT, info);
    bind(info.logits, nvinfer1::TensorIOMode::kOUTPUT, info);
    cudaStream_t stream = nullptr;
    cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    stream_.reset(stream);
  }

  void infer(const void* video, const float* audio, int64_t batch, float* logits) override {
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    copy_in(video_name_, video, batch);
    copy_in(audio_name_, audio, batch);
    if (!context_->enqueueV3(stream_.get()))
      throw Error(Status::Runtime, path_ + ": TensorRT enqueueV3 failed: " + logger_.last_error);
    const auto n = static_cast<std::size_t>(batch) * per_sample_.at("logits");
    cuda_check(cudaMemcpyAsync(logits, buffers_.at("logits").get(), n, cudaMemcpyDeviceToHost,
                               stream_.get()),
               "copying logits from the GPU");
    cuda_check(cudaStreamSynchronize(stream_.get()), path_ + ": inference failed on the GPU");
  }

 private:
  void check_compatible(const nlohmann::json& side) {
    std::vector<std::string> problems;
    const std::string built = major_minor_patch(side.at("tensorrt_version").get<std::string>());
    const std::string here = version_string(getInferLibVersion());
    if (side.value("version_compatible", false)) {
      if (!forward_compatible(built, here))
        problems.push_back("it was built version-compatible with TensorRT " + built +
                           ", which runs on that or a newer TensorRT of the same major version only; this is TensorRT " +
                           here);
    } else if (built != here) {
      problems.push_back("it was built with TensorRT " + built + ", this is TensorRT " + here);
    }
    if (side.value("device", std::string("gpu")) != "gpu")
      problems.push_back("it was built for DLA, which cfnsr does not run");
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
    const std::string gpu = prop.name;
    const std::string cc = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    if ((side.at("gpu").get<std::string>() != gpu || side.at("compute_capability").get<std::string>() != cc) &&
        !side.value("hardware_compatible", false))
      problems.push_back("it was built for " + side["gpu"].get<std::string>() + " (compute " +
                         side["compute_capability"].get<std::string>() + "), this GPU is " + gpu + " (compute " + cc +
                         ")");
    if (problems.empty()) return;
    std::string msg = "engine " + path_ + " cannot run here: ";
    for (std::size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
    throw Error(Status::VersionMismatch,
                msg + ". Rebuild it on this machine: cfnsr build " + side.value("source_onnx", "MODEL.onnx"));
  }

  void bind(const TensorInfo& t, nvinfer1::TensorIOMode mode, const ModelInfo& info) {
    const char* name = t.name.c_str();
    if (engine_->getTensorIOMode(name) != mode)
      throw Error(Status::InvalidArtifact, path_ + " has no " +
                                               (mode == nvinfer1::TensorIOMode::kINPUT ? "input" : "output") +
                                               " tensor '" + t.name + "' (the sidecar belongs to another engine?)");
    // A media artifact's frames are uint8 network inputs (TensorRT casts them to float inside the engine).
    const auto want = t.dtype == "uint8" ? nvinfer1::DataType::kUINT8 : nvinfer1::DataType::kFLOAT;
    if (engine_->getTensorDataType(name) != want)
      throw Error(Status::InvalidArtifact, path_ + ": tensor '" + t.name + "' is not " + t.dtype + " in the engine");
    nvinfer1::Dims dims = engine_->getTensorShape(name);
    if (dims.nbDims != static_cast<int>(t.shape.size()))
      throw Error(Status::InvalidArtifact, path_ + ": tensor '" + t.name + "' has shape " + dims_string(dims) +
                                               " in the engine, rank " + std::to_string(t.shape.size()) +
                                               " in the sidecar");
    for (int i = 1; i < dims.nbDims; ++i)
      if (dims.d[i] != t.shape[static_cast<std::size_t>(i)])
        throw Error(Status::InvalidArtifact, path_ + ": tensor '" + t.name + "' has shape " + dims_string(dims) +
                                                 " in the engine; the sidecar says otherwise");
    if (mode == nvinfer1::TensorIOMode::kINPUT) {
      auto max = engine_->getProfileShape(name, 0, nvinfer1::OptProfileSelector::kMAX);
      if (max.nbDims > 0 && max.d[0] != info.max_batch)
        throw Error(Status::InvalidArtifact, path_ + ": the engine's profile allows batch up to " +
                                                 std::to_string(max.d[0]) + ", its sidecar says " +
                                                 std::to_string(info.max_batch) + " (the sidecar belongs to another engine?)");
    }
    per_sample_[t.name] = t.sample_elements() * t.element_size();  // bytes per clip
    void* ptr = nullptr;
    cuda_check(cudaMalloc(&ptr, per_sample_[t.name] * static_cast<std::size_t>(info.max_batch)),
               "allocating GPU memory for '" + t.name + "'");
    buffers_[t.name].reset(ptr);
    if (!context_->setTensorAddress(name, ptr))
      throw Error(Status::Runtime, path_ + ": setTensorAddress('" + t.name + "') failed: " + logger_.last_error);
    dims_[t.name] = dims;
  }

  void copy_in(const std::string& name, const void* host, int64_t batch) {
    nvinfer1::Dims d = dims_.at(name);
    d.d[0] = batch;
    if (!context_->setInputShape(name.c_str(), d))
      throw Error(Status::InputSize, path_ + ": TensorRT refused shape " + dims_string(d) + " for '" + name + "': " +
                                         logger_.last_error);
    const auto n = static_cast<std::size_t>(batch) * per_sample_.at(name);
    cuda_check(cudaMemcpyAsync(buffers_.at(name).get(), host, n, cudaMemcpyHostToDevice,
                               stream_.get()),
               "copying '" + name + "' to the GPU");
  }

  // Declaration order is destruction order reversed: the context goes before the engine, the engine before the
  // runtime, and the buffers and stream after TensorRT has let go of them.
  std::string path_;
  std::string video_name_, audio_name_;
  int device_;
  Logger logger_;
  std::unordered_map<std::string, DeviceBuffer> buffers_;
  std::unique_ptr<CUstream_st, StreamDestroy> stream_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  std::unordered_map<std::string, std::size_t> per_sample_;
  std::unordered_map<std::string, nvinfer1::Dims> dims_;
};

}  // namespace

Opened open_tensorrt(const std::string& path, const Options& options, const nlohmann::json& sidecar, ModelInfo info) {
  Opened opened;
  opened.backend = std::make_unique<TensorRTBackend>(path, options, sidecar, info);
  opened.info = std::move(info);
  return opened;
}

}  // namespace cfnsr::detail
