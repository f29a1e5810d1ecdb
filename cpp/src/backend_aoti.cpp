// The libtorch backend: AOTInductor packages (.pt2) written by `cfnsr export --format pt2`.
//
// The package holds a shared library compiled by torch.compile's AOTInductor for one device type (cpu or cuda) and,
// on CPU, one instruction set; AOTIModelPackageLoader extracts and loads it. The checks below run before anything
// of the package executes, so a package from another machine is refused with a message instead of SIGILL.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <type_traits>
#include <unordered_map>

#include "internal.hpp"

namespace cfnsr::detail {
namespace {

using Loader = torch::inductor::AOTIModelPackageLoader;
using Metadata = std::unordered_map<std::string, std::string>;

// torch >= 2.8 reads a package's metadata without loading its library; older torch only through the loader.
template <typename L, typename = void>
struct has_static_metadata : std::false_type {};
template <typename L>
struct has_static_metadata<L, std::void_t<decltype(L::load_metadata_from_package(std::string(), std::string()))>>
    : std::true_type {};

std::string message_of(const c10::Error& e) {
  std::string m = e.what_without_backtrace();
  auto nl = m.find('\n');
  return nl == std::string::npos ? m : m.substr(0, nl);
}

const char* this_machine() {
#if defined(__x86_64__) || defined(_M_X64)
  return "x86_64";
#elif defined(__aarch64__)
  return "aarch64";
#else
  return "";
#endif
}

std::set<std::string> cpu_flags() {
  std::set<std::string> flags;
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0 || line.rfind("Features", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      std::string w;
      while (words >> w) flags.insert(w);
      break;
    }
  }
  return flags;
}

// AOTI_CPU_ISA is torch's name for the vector ISA the kernels were compiled for, e.g. "AVX2", "AVX512",
// "AVX512 AVX512_VNNI AMX_TILE", "ASIMD". Each word needs these /proc/cpuinfo flags.
std::vector<std::string> missing_isa(const std::string& isa, const std::set<std::string>& have) {
  static const std::unordered_map<std::string, std::vector<std::string>> needs = {
      {"avx2", {"avx2", "fma"}},
      {"avx512", {"avx512f", "avx512dq", "avx512vl", "avx512bw", "fma"}},
      {"neon", {"asimd"}},
  };
  std::vector<std::string> missing;
  std::istringstream words(isa);
  std::string w;
  while (words >> w) {
    std::transform(w.begin(), w.end(), w.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (w == "invalid_vec_isa" || w == "none") continue;
    auto it = needs.find(w);
    for (const auto& flag : it == needs.end() ? std::vector<std::string>{w} : it->second)
      if (!have.count(flag)) missing.push_back(flag);
  }
  return missing;
}

std::string entry(const Metadata& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? "" : it->second;
}

// Everything that can be checked from the metadata: cfnsr contract, machine, instruction set, device.
ModelInfo check(const Metadata& meta, const std::string& path) {
  ModelInfo info;
  const auto cfnsr_meta = decode_prefixed(meta);
  parse_metadata(cfnsr_meta, path, info);
  info.backend = "aoti";
  info.device = entry(meta, "AOTI_DEVICE_KEY").empty() ? "cpu" : entry(meta, "AOTI_DEVICE_KEY");
  const auto machine = entry(meta, "AOTI_MACHINE");
  if (!machine.empty() && *this_machine() && machine != this_machine())
    throw Error(Status::VersionMismatch, path + " was compiled for " + machine + " processors; this is " +
                                             this_machine() + ". Export it on (or for) this machine");
  if (info.device == "cpu") {
    const auto isa = entry(meta, "AOTI_CPU_ISA");
    const auto have = cpu_flags();
    if (!have.empty()) {
      auto missing = missing_isa(isa, have);
      if (!missing.empty()) {
        std::string list;
        for (const auto& f : missing) list += (list.empty() ? "" : ", ") + f;
        throw Error(Status::VersionMismatch, path + " was compiled for the " + isa + " instruction set; this CPU "
                                                 "lacks " + list + ". Re-export it on a machine like this one "
                                                 "(`cfnsr export CHECKPOINT --format pt2`)");
      }
    }
  } else if (info.device == "cuda") {
    if (!at::globalContext().hasCUDA())
      throw Error(Status::BackendUnavailable,
                  path + " was compiled for CUDA (compute capability " + entry(meta, "AOTI_COMPUTE_CAPABILITY") +
                      "), and this libtorch sees no CUDA device (a CPU-only libtorch, or no GPU/driver)");
  } else {
    throw Error(Status::BackendUnavailable, path + " targets device '" + info.device + "'; this runtime runs cpu "
                                                   "and cuda packages");
  }
  info.min_batch = 1;
  const auto& max_batch = cfnsr_meta.contains("max_batch") ? cfnsr_meta["max_batch"] : nlohmann::json(1);
  if (!max_batch.is_number_integer()) throw Error(Status::InvalidArtifact, path + ": max_batch is not an integer");
  info.max_batch = max_batch.get<int64_t>();
  return info;
}

class AotiBackend final : public Backend {
 public:
  AotiBackend(std::unique_ptr<Loader> loader, const ModelInfo& info, int device_index)
      : loader_(std::move(loader)), info_(info) {
    if (info.device == "cuda") device_ = at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index));
  }

  void infer(const void* video, const float* audio, int64_t batch, float* logits) override {
    try {
      c10::InferenceMode guard;
      const auto video_type = info_.video.dtype == "uint8" ? at::kByte : at::kFloat;
      auto v = at::from_blob(const_cast<void*>(video), shape(info_.video, batch), video_type);
      auto a = at::from_blob(const_cast<float*>(audio), shape(info_.audio, batch), at::kFloat);
      if (device_.is_cuda()) {
        v = v.to(device_);
        a = a.to(device_);
      }
      auto outputs = loader_->run({v, a});
      if (outputs.empty()) throw Error(Status::Runtime, info_.path + ": the package returned no output");
      auto out = outputs[0].to(at::kCPU, at::kFloat).contiguous();
      const auto expected = static_cast<int64_t>(batch * info_.logits.shape[1]);
      if (out.numel() != expected)
        throw Error(Status::Runtime, info_.path + ": the package returned " + std::to_string(out.numel()) +
                                         " logits, expected " + std::to_string(expected));
      std::memcpy(logits, out.data_ptr<float>(), sizeof(float) * static_cast<std::size_t>(expected));
    } catch (const c10::Error& e) {
      throw Error(Status::Runtime, info_.path + ": libtorch failed while running: " + message_of(e));
    }
  }

 private:
  static std::vector<int64_t> shape(const TensorInfo& t, int64_t batch) {
    std::vector<int64_t> s = t.shape;
    s[0] = batch;
    return s;
  }

  std::unique_ptr<Loader> loader_;
  ModelInfo info_;
  at::Device device_{at::kCPU};
};

}  // namespace

Opened open_aoti(const std::string& path, const Options& options) {
  if (options.num_threads < 0) throw Error(Status::InvalidArgument, "num_threads must be >= 0");
  try {
    ModelInfo info;
    if constexpr (has_static_metadata<Loader>::value) {
      info = check(Loader::load_metadata_from_package(path, "model"), path);
    }
    if (options.num_threads > 0) at::set_num_threads(options.num_threads);
    int device = info.device == "cuda" ? options.device_index : -1;
    auto loader = std::make_unique<Loader>(path, "model", /*run_single_threaded=*/false, /*num_runners=*/1,
                                           static_cast<c10::DeviceIndex>(device));
    if constexpr (!has_static_metadata<Loader>::value) {
      info = check(loader->get_metadata(), path);
    }
    Opened opened;
    opened.info = info;
    opened.backend = std::make_unique<AotiBackend>(std::move(loader), info, options.device_index);
    return opened;
  } catch (const c10::Error& e) {
    throw Error(Status::InvalidArtifact, path + ": libtorch cannot load this AOTInductor package: " + message_of(e));
  }
}

}  // namespace cfnsr::detail
