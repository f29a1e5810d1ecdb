// cfnsr_infer: run a cfnsr artifact on preprocessed inputs from the command line, with the C++ API.
//
//   cfnsr_infer MODEL.pt2 --video video.npy --audio audio.npy [--threads N] [--device N] [--repeat N]
//   cfnsr_infer MODEL.engine --info
//
// video.npy is float32 (N, 3, T, H, W), audio.npy float32 (N, MFCC bins, frames), as `cfnsr predict --save-inputs`
// writes them; for a media artifact video.npy is uint8 face crops (N, T, H, W, 3) and audio.npy PCM (N, samples). Prints JSON: labels, logits, probabilities and the top class of each clip (and latency with
// --repeat). Exit status: 0, or the cfnsr_status code of the error (64 for a usage error).
#include <algorithm>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "cfnsr/runtime.hpp"
#include "npy.hpp"

namespace {

int usage(const std::string& why) {
  std::cerr << "cfnsr_infer: " << why << "\n"
            << "usage: cfnsr_infer MODEL (--info | --video V.npy --audio A.npy) [--threads N] [--device N] "
               "[--repeat N]\n";
  return 64;
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

void rows(std::ostream& os, const char* key, const std::vector<float>& values, int64_t n, int64_t cols) {
  os << "  \"" << key << "\": [";
  for (int64_t r = 0; r < n; ++r) {
    os << (r ? ", " : "") << "[";
    for (int64_t c = 0; c < cols; ++c) os << (c ? ", " : "") << values[static_cast<std::size_t>(r * cols + c)];
    os << "]";
  }
  os << "],\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, video_path, audio_path;
  bool info_only = false;
  int repeat = 0;
  cfnsr::Options options;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(std::string(name) + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--video") video_path = value("--video");
      else if (a == "--audio") audio_path = value("--audio");
      else if (a == "--threads") options.num_threads = std::stoi(value("--threads"));
      else if (a == "--device") options.device_index = std::stoi(value("--device"));
      else if (a == "--repeat") repeat = std::stoi(value("--repeat"));
      else if (a == "--info") info_only = true;
      else if (a == "-h" || a == "--help") { usage("help"); return 0; }
      else if (!a.empty() && a[0] == '-') return usage("unknown option " + a);
      else if (model_path.empty()) model_path = a;
      else return usage("unexpected argument " + a);
    } catch (const std::exception& e) {
      return usage(e.what());
    }
  }
  if (model_path.empty()) return usage("no MODEL given");
  if (!info_only && (video_path.empty() || audio_path.empty())) return usage("--video and --audio are required");

  // The JSON is printed only when everything worked, so stdout is either a whole document or empty.
  std::ostringstream os;
  os << std::setprecision(9);
  try {
    auto model = cfnsr::Model::open(model_path, options);
    const auto& info = model->info();
    os << "{\n  \"model\": " << quoted(info.path) << ",\n  \"backend\": \"" << info.backend << "\",\n  \"device\": \""
       << info.device << "\",\n  \"precision\": \"" << info.precision << "\",\n  \"batch_range\": [" << info.min_batch
       << ", " << info.max_batch << "],\n  \"labels\": [";
    for (std::size_t i = 0; i < info.labels.size(); ++i) os << (i ? ", " : "") << quoted(info.labels[i]);
    os << "],\n";
    if (info_only) {
      os << "  \"metadata\": " << info.metadata_json << "\n}\n";
      std::cout << os.str();
      return 0;
    }
    npy::Array video, audio;
    const bool media = info.input_kind == "media";
    try {
      video = npy::load(video_path, media);
      audio = npy::load_float32(audio_path);
      if (media && video.bytes.empty() && !video.data.empty())
        throw std::runtime_error(video_path + ": a media artifact takes uint8 face crops (N, T, H, W, 3)");
    } catch (const std::exception& e) {
      std::cerr << "cfnsr_infer: " << e.what() << "\n";
      return CFNSR_ERROR_INVALID_ARGUMENT;
    }
    const int64_t batch = video.shape.empty() ? 0 : video.shape[0];
    auto run = [&] {
      return media ? model->run(video.bytes.data(), video.bytes.size(), audio.data.data(), audio.data.size(), batch)
                   : model->run(video.data.data(), video.data.size(), audio.data.data(), audio.data.size(), batch);
    };
    auto result = run();
    rows(os, "logits", result.logits, result.batch, result.num_classes);
    rows(os, "probabilities", result.probabilities, result.batch, result.num_classes);
    os << "  \"top1\": [";
    for (std::size_t i = 0; i < result.top1.size(); ++i)
      os << (i ? ", " : "") << quoted(info.labels[static_cast<std::size_t>(result.top1[i])]);
    os << "]";
    if (repeat > 0) {
      std::vector<double> ms;
      for (int r = 0; r < repeat; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        run();
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(ms.begin(), ms.end());
      double mean = 0;
      for (double m : ms) mean += m / static_cast<double>(ms.size());
      os << ",\n  \"latency_ms\": {\"mean\": " << mean << ", \"p50\": " << ms[ms.size() / 2]
         << ", \"min\": " << ms.front() << ", \"runs\": " << repeat << "}";
    }
    os << "\n}\n";
    std::cout << os.str();
    return 0;
  } catch (const cfnsr::Error& e) {
    std::cerr << "cfnsr_infer: " << cfnsr_status_name(static_cast<cfnsr_status>(e.status())) << ": " << e.what()
              << "\n";
    return static_cast<int>(e.status());
  }
}
