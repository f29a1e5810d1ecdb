// cfnsr_predict: the emotion of a clip file with the C++ media component, no Python (what `cfnsr predict` does).
//
//   cfnsr_predict MODEL clip.mp4 [--landmarks CSV] [--json] [--repeat N] [--threads N] [--device N]
//                 [--cascade XML] [--allow-center-crop] [--save-inputs DIR] [--ffmpeg-log]
//   cfnsr_predict MODEL URL|FILE --live [--fast] [--hop S] [--queue N] [--max-latency S] [--threads N] ...
//
// --live: a stream (cfnsr::media::Stream, what `cfnsr live` does): a file played at its own rate (--fast: as fast
// as it decodes, no window dropped) or a URL FFmpeg opens; one JSON line per window (stream time, emotion,
// probabilities, face box, face_lost / audio_padded, latency) and a last summary line (windows, dropped, latency
// p50/p99).
//
// MODEL is a media artifact (`cfnsr export CHECKPOINT --inputs media --format pt2`, or an engine built from a media
// ONNX file). Prints the emotion, the probabilities, how the face was found and the time of each stage (decode,
// detection, crop, resample, model, total); --json prints them as JSON, --repeat N predicts N more times and reports
// each stage's median over those warm runs, --save-inputs writes the model's inputs as video.npy (uint8 crops) and
// audio.npy (PCM), as `cfnsr predict --save-inputs` does. Exit status: 0, or the cfnsr_status code of the error
// (64 for a usage error).
//
// Camera frames + microphone samples instead of a file: see README ("C++: camera frames and PCM"); the only change
// is Recognizer::predict(frames, pcm, count, rate) in place of predict_file.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cfnsr/media.hpp"
#include "npy.hpp"

namespace {

int usage(const std::string& why) {
  std::cerr << "cfnsr_predict: " << why << "\n"
            << "usage: cfnsr_predict MODEL CLIP [--landmarks CSV] [--json] [--repeat N] [--threads N] [--device N] "
               "[--cascade XML] [--allow-center-crop] [--save-inputs DIR] [--ffmpeg-log]\n"
            << "       cfnsr_predict MODEL URL|FILE --live [--fast] [--hop S] [--queue N] [--max-latency S] "
               "[--threads N] [--device N] [--cascade XML] [--allow-center-crop]\n";
  return 64;
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void save_inputs(const std::string& dir, const cfnsr::media::Recognizer& rec) {
  const auto& spec = rec.spec();
  const auto& frames = rec.last_frames();
  const auto& pcm = rec.last_pcm();
  for (const auto& [name, write] : std::vector<std::pair<std::string, std::function<void(const std::string&)>>>{
           {"video.npy",
            [&](const std::string& p) {
              npy::save(p, frames.data(), frames.size(), {1, spec.frames, spec.image_size, spec.image_size, 3}, "|u1");
            }},
           {"audio.npy", [&](const std::string& p) {
              npy::save(p, pcm.data(), pcm.size() * sizeof(float), {1, static_cast<int64_t>(pcm.size())}, "<f4");
            }}}) {
    const std::string path = dir + "/" + name, tmp = path + ".part";
    write(tmp);  // a reader never sees half a file
    if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error("cannot write " + path);
  }
}

// --live: one JSON line per window as it comes, then the summary.
int live(const std::string& model_path, const std::string& source, const cfnsr::media::RecognizerOptions& options,
         cfnsr::media::StreamOptions so, bool fast) {
  cfnsr::media::Recognizer rec(model_path, options);
  const bool file = source.find("://") == std::string::npos;
  so.wait = file ? INFINITY : 1.0;  // a file's tracks both reach its end, however it interleaves them
  so.block = fast;
  const auto labels = rec.model().info().labels;
  cfnsr::media::Stream stream(rec, so, [&](const cfnsr::media::Window& w) {
    std::ostringstream o;
    o << std::setprecision(10) << "{\"type\": \"window\", \"window\": " << w.index << ", \"start_s\": " << w.start
      << ", \"end_s\": " << w.end << ", \"emotion\": " << (w.face_lost ? "null" : quoted(w.emotion))
      << ", \"probabilities\": ";
    if (w.face_lost) {
      o << "null, \"face\": null, \"crop\": null";
    } else {
      o << "{";
      for (std::size_t i = 0; i < labels.size(); ++i) o << (i ? ", " : "") << quoted(labels[i]) << ": " << w.probabilities[i];
      o << "}, \"face\": [" << w.face.left << ", " << w.face.top << ", " << w.face.right << ", " << w.face.bottom
        << "], \"crop\": " << quoted(w.crop);
    }
    auto flag = [](bool b) { return b ? "true" : "false"; };
    o << ", \"face_lost\": " << flag(w.face_lost) << ", \"face_fallback\": " << flag(w.face_fallback)
      << ", \"audio_padded\": " << flag(w.audio_padded) << ", \"latency_ms\": " << w.latency_ms
      << ", \"timings_ms\": {\"face\": " << w.face_ms << ", \"crop\": " << w.crop_ms << ", \"model\": " << w.model_ms
      << "}}\n";
    std::cout << o.str() << std::flush;
  });
  cfnsr::media::read_into(source, stream, !(file && fast));
  stream.close();
  const auto s = stream.stats();
  std::cout << std::setprecision(6) << "{\"type\": \"summary\", \"source\": " << quoted(source)
            << ", \"windows\": " << s.windows << ", \"dropped\": " << s.dropped << ", \"late\": " << s.late
            << ", \"face_lost\": " << s.face_lost << ", \"max_queue\": " << s.max_queue
            << ", \"latency_ms\": {\"p50\": " << s.latency_p50_ms << ", \"p99\": " << s.latency_p99_ms
            << "}, \"busy_ms\": {\"p50\": " << s.busy_p50_ms << ", \"p99\": " << s.busy_p99_ms
            << "}, \"realtime_factor\": " << s.busy_p50_ms / (1e3 * so.hop) << "}\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  std::string landmarks, save_dir;
  bool as_json = false, ffmpeg_log = false, is_live = false, fast = false;
  int repeat = 0;
  cfnsr::media::RecognizerOptions options;
  cfnsr::media::StreamOptions stream_options;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return argv[++i];
      };
      auto number = [&](int min) {
        const std::string v = value();
        std::size_t used = 0;
        const int n = std::stoi(v, &used);
        if (used != v.size() || n < min) throw std::invalid_argument(a + " takes an integer >= " + std::to_string(min));
        return n;
      };
      auto seconds = [&]() {
        const std::string v = value();
        std::size_t used = 0;
        const double x = std::stod(v, &used);
        if (used != v.size() || !(x >= 0) || !std::isfinite(x)) throw std::invalid_argument(a + " takes seconds >= 0");
        return x;
      };
      if (a == "--landmarks") landmarks = value();
      else if (a == "--live") is_live = true;
      else if (a == "--fast") fast = true;
      else if (a == "--hop") stream_options.hop = seconds();
      else if (a == "--queue") stream_options.queue = static_cast<std::size_t>(number(1));
      else if (a == "--max-latency") stream_options.max_latency = seconds();
      else if (a == "--json") as_json = true;
      else if (a == "--repeat") repeat = number(0);
      else if (a == "--threads") options.model.num_threads = number(0);
      else if (a == "--device") options.model.device_index = number(0);
      else if (a == "--cascade") options.cascade = value();
      else if (a == "--allow-center-crop") options.allow_center_crop = true;
      else if (a == "--save-inputs") save_dir = value();
      else if (a == "--ffmpeg-log") ffmpeg_log = true;
      else if (a == "-h" || a == "--help") return usage("the emotion of a clip with a media artifact"), 0;
      else if (!a.empty() && a[0] == '-') return usage("unknown option " + a);
      else positional.push_back(a);
    }
  } catch (const std::exception& e) {
    return usage(e.what());
  }
  if (positional.size() != 2) return usage("expected MODEL and CLIP");
  const std::string& model_path = positional[0];
  const std::string& clip = positional[1];
  try {
    cfnsr::media::ffmpeg_messages(ffmpeg_log);  // a corrupt file's decoder chatter stays out of the output
    if (is_live) return live(model_path, clip, options, stream_options, fast);
    cfnsr::media::Recognizer rec(model_path, options);
    cfnsr::media::Prediction p = rec.predict_file(clip, landmarks);
    if (!save_dir.empty()) save_inputs(save_dir, rec);
    std::map<std::string, std::vector<double>> warm;
    for (int r = 0; r < repeat; ++r)
      for (const auto& [stage, ms] : rec.predict_file(clip, landmarks).timings_ms) warm[stage].push_back(ms);
    const auto& info = rec.model().info();
    if (as_json) {
      std::ostringstream o;
      o << std::setprecision(9);
      o << "{\n  \"video\": " << quoted(clip) << ",\n  \"model\": " << quoted(model_path)
        << ",\n  \"backend\": " << quoted(info.backend) << ",\n  \"device\": " << quoted(info.device)
        << ",\n  \"emotion\": " << quoted(p.emotion) << ",\n  \"label_id\": " << p.label_id
        << ",\n  \"probabilities\": {";
      for (std::size_t i = 0; i < p.labels.size(); ++i)
        o << (i ? ", " : "") << quoted(p.labels[i]) << ": " << p.probabilities[i];
      o << "},\n  \"crop\": " << quoted(p.crop) << ",\n  \"audio_padded\": " << (p.audio_padded ? "true" : "false");
      if (!p.crop_note.empty()) o << ",\n  \"crop_note\": " << quoted(p.crop_note);
      o << ",\n  \"boxes\": [";
      for (std::size_t i = 0; i < p.boxes.size(); ++i)
        o << (i ? ", " : "") << "[" << p.boxes[i].left << ", " << p.boxes[i].top << ", " << p.boxes[i].right << ", "
          << p.boxes[i].bottom << "]";
      o << "],\n  \"timings_ms\": {";
      for (std::size_t i = 0; i < p.timings_ms.size(); ++i)
        o << (i ? ", " : "") << quoted(p.timings_ms[i].first) << ": " << p.timings_ms[i].second;
      o << "}";
      if (repeat > 0) {
        o << ",\n  \"repeat\": " << repeat << ",\n  \"warm_median_ms\": {";
        bool first = true;
        for (const auto& [stage, _] : p.timings_ms) {
          o << (first ? "" : ", ") << quoted(stage) << ": " << median(warm[stage]);
          first = false;
        }
        o << "}";
      }
      if (!save_dir.empty()) o << ",\n  \"saved_inputs\": " << quoted(save_dir);
      o << "\n}\n";
      std::cout << o.str();
    } else {
      std::cout << p.emotion << "  (" << std::fixed << std::setprecision(1) << 100 * p.probabilities[p.label_id]
                << "%, " << info.backend << " " << info.device << ", face: " << p.crop << ")\n";
      if (!p.crop_note.empty()) std::cout << "  note: " << p.crop_note << "\n";
      for (std::size_t i = 0; i < p.labels.size(); ++i)
        std::cout << "  " << std::left << std::setw(10) << p.labels[i] << std::right << std::setw(6)
                  << std::setprecision(1) << 100 * p.probabilities[i] << "%\n";
      std::cout << (repeat > 0 ? "  ms (warm median of " + std::to_string(repeat) + "):" : std::string("  ms:"));
      for (const auto& [stage, ms] : p.timings_ms)
        std::cout << " " << stage << " " << std::setprecision(1) << (repeat > 0 ? median(warm[stage]) : ms);
      std::cout << "\n";
    }
    return 0;
  } catch (const cfnsr::Error& e) {
    std::cerr << "cfnsr_predict: " << e.what() << "\n";
    return static_cast<int>(e.status());
  } catch (const std::exception& e) {
    std::cerr << "cfnsr_predict: " << e.what() << "\n";
    return static_cast<int>(cfnsr::Status::Internal);
  }
}
