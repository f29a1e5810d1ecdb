// Spec, frame choice, face boxes (landmark CSV, Haar, centre) and crops: cfnsr.data.features in C++.
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/objdetect.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <sstream>
#include <unordered_map>

#include "cfnsr/media.hpp"
#include "checks.hpp"

#ifndef CFNSR_HAAR_DIR
#define CFNSR_HAAR_DIR ""
#endif

namespace cfnsr::media {
namespace {

[[noreturn]] void invalid(const std::string& what) { throw Error(Status::InvalidArgument, what); }
[[noreturn]] void bad_media(const std::string& what) { throw Error(Status::Media, what); }

// Python's round(): half to even (the default floating-point rounding mode).
int64_t round_even(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

cv::Mat as_mat(const Image& f) {
  const std::size_t stride = f.stride ? f.stride : static_cast<std::size_t>(f.width) * 3;
  return cv::Mat(f.height, f.width, CV_8UC3, const_cast<uint8_t*>(f.data), stride);
}

}  // namespace

void detail::check_image(const Image& f, std::size_t i) {
  if (f.data == nullptr || f.height <= 0 || f.width <= 0)
    invalid("frame " + std::to_string(i) + ": expected 8-bit RGB pixels of a positive size (got " +
            std::to_string(f.width) + "x" + std::to_string(f.height) + (f.data ? "" : ", null data") + ")");
  if (f.stride != 0 && f.stride < static_cast<std::size_t>(f.width) * 3)
    invalid("frame " + std::to_string(i) + ": row stride " + std::to_string(f.stride) +
            " bytes is less than width x 3 = " + std::to_string(f.width * 3) +
            " (frames are 8-bit RGB, 3 bytes per pixel)");
}

// ------------------------------------------------------------------------------------------------ spec
Spec Spec::from_model(const ModelInfo& info) {
  if (info.input_kind != "media")
    throw Error(Status::InvalidArgument,
                info.path + " is a features artifact (float crops and MFCC in); cfnsr::media runs media artifacts: "
                            "export the checkpoint with `cfnsr export --inputs media`");
  const auto pre = nlohmann::json::parse(info.preprocess_json, nullptr, /*allow_exceptions=*/false);
  if (!pre.is_object() || pre.empty())
    throw Error(Status::InvalidArtifact, info.path + " records no preprocessing (cfnsr.preprocess); re-export it");
  Spec s;
  try {
    s.frames = pre.value("frames", s.frames);
    s.image_size = pre.value("image_size", s.image_size);
    s.sample_rate = pre.value("sample_rate", s.sample_rate);
    s.audio_offset = pre.value("audio_offset", s.audio_offset);
    s.audio_duration = pre.value("audio_duration", s.audio_duration);
    s.msaf_compat = pre.value("msaf_compat", s.msaf_compat);
  } catch (const nlohmann::json::exception& e) {
    throw Error(Status::InvalidArtifact, info.path + ": malformed preprocessing metadata (" + e.what() + ")");
  }
  const auto& v = info.video.shape;  // (N, T, H, W, 3)
  if (s.frames <= 0 || s.image_size <= 0 || s.sample_rate <= 0 || s.audio_duration <= 0 || s.audio_offset < 0 ||
      v.size() != 5 || v[1] != s.frames || v[2] != s.image_size || v[3] != s.image_size ||
      info.audio.shape.size() != 2 || info.audio.shape[1] != s.pcm_samples())
    throw Error(Status::InvalidArtifact,
                info.path + ": its preprocessing (" + std::to_string(s.frames) + " frames of " +
                    std::to_string(s.image_size) + " px, " + std::to_string(s.pcm_samples()) +
                    " samples) does not match its inputs 'frames' and 'pcm'");
  return s;
}

int64_t Spec::pcm_offset() const { return round_even(audio_offset * sample_rate); }
int64_t Spec::pcm_samples() const { return round_even(audio_duration * sample_rate); }

// ------------------------------------------------------------------------------------------------ frames and boxes
std::vector<int64_t> frame_indices(int64_t n_frames, int count) {
  if (n_frames <= 0) invalid("a clip with no frames");
  if (count <= 0) invalid("a frame count of " + std::to_string(count));
  std::vector<int64_t> out(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) out[static_cast<std::size_t>(i)] = std::min(i * n_frames / count, n_frames - 1);
  return out;
}

std::string box_problem(const std::vector<Box>& boxes, int height, int width) {
  constexpr double min_size = 8.0, tolerance = 0.1;
  double smallest = std::numeric_limits<double>::infinity();
  bool outside = false;
  const double mx = tolerance * width, my = tolerance * height;
  for (const auto& b : boxes) {
    const double l = b.left, t = b.top, r = b.right, d = b.bottom;
    if (!std::isfinite(l) || !std::isfinite(t) || !std::isfinite(r) || !std::isfinite(d))
      return "non-finite landmark coordinates";
    smallest = std::min({smallest, r - l, d - t});
    outside = outside || l < -mx || t < -my || r > width + mx || d > height + my;
  }
  if (smallest < min_size) {
    std::ostringstream s;
    s.setf(std::ios::fixed);
    s.precision(1);
    s << "a face box smaller than 8 pixels (" << smallest << ")";
    return s.str();
  }
  if (outside) return "face boxes outside the " + std::to_string(width) + "x" + std::to_string(height) + " frame";
  return "";
}

std::vector<Box> center_boxes(int count, int height, int width) {
  const int side = std::min(height, width);
  const float left = static_cast<float>((width - side) / 2), top = static_cast<float>((height - side) / 2);
  return std::vector<Box>(static_cast<std::size_t>(std::max(count, 0)), Box{left, top, left + side, top + side});
}

Landmarks read_landmarks(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(Status::FileNotFound, "landmark file " + path + " does not exist or cannot be read");
  auto split = [](const std::string& line) {
    std::vector<std::string> cells;
    std::string cell;
    std::istringstream s(line);
    while (std::getline(s, cell, ',')) cells.push_back(cell);
    if (!line.empty() && line.back() == ',') cells.emplace_back();
    return cells;
  };
  auto trim = [](std::string s) {
    const auto a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
    return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
  };
  std::string line;
  if (!std::getline(in, line)) bad_media("landmark file " + path + " has no data rows");
  std::unordered_map<std::string, std::size_t> index;
  const auto header = split(line);
  for (std::size_t i = 0; i < header.size(); ++i) index[trim(header[i])] = i;
  std::vector<std::size_t> xi(68), yi(68);
  for (int k = 0; k < 68; ++k) {
    for (auto [axis, cols] : {std::make_pair('x', &xi), std::make_pair('y', &yi)}) {
      const std::string name = std::string(1, axis) + "_" + std::to_string(k);
      auto it = index.find(name);
      if (it == index.end())
        bad_media("landmark file " + path + " lacks OpenFace column '" + name + "' (expected x_0..x_67, y_0..y_67)");
      (*cols)[static_cast<std::size_t>(k)] = it->second;
    }
  }
  const auto ok = index.find("success");
  Landmarks out;
  bool any = false;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  while (std::getline(in, line)) {
    std::vector<float> row(68 * 2, nan);
    const auto cells = split(line);
    if (!trim(line).empty()) {
      auto number = [&](std::size_t col) {
        if (col >= cells.size())
          bad_media("landmark file " + path + ", data row " + std::to_string(out.rows + 1) + ": too few columns");
        const std::string c = trim(cells[col]);
        char* end = nullptr;
        const double v = std::strtod(c.c_str(), &end);
        if (c.empty() || *end != '\0')
          bad_media("landmark file " + path + ", data row " + std::to_string(out.rows + 1) + ": '" + c +
                  "' is not a number");
        return v;
      };
      if (ok == index.end() || number(ok->second) != 0) {
        for (int k = 0; k < 68; ++k) {
          row[static_cast<std::size_t>(2 * k)] = static_cast<float>(number(xi[static_cast<std::size_t>(k)]));
          row[static_cast<std::size_t>(2 * k + 1)] = static_cast<float>(number(yi[static_cast<std::size_t>(k)]));
        }
        any = any || std::none_of(row.begin(), row.end(), [](float v) { return std::isnan(v); });
      }
    }
    out.xy.insert(out.xy.end(), row.begin(), row.end());
    ++out.rows;
  }
  if (out.rows == 0) bad_media("landmark file " + path + " has no data rows");
  if (!any) bad_media("landmark file " + path + ": OpenFace tracked no face in any row");
  return out;
}

std::vector<Box> landmark_boxes(const Landmarks& lm, const std::vector<int64_t>& frame_idx, int64_t n_frames) {
  const int64_t rows = lm.rows;
  if (rows <= 0 || lm.xy.size() != static_cast<std::size_t>(rows) * 136) invalid("empty or malformed landmarks");
  std::vector<int64_t> valid;
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = lm.xy.data() + r * 136;
    if (std::none_of(p, p + 136, [](float v) { return std::isnan(v); })) valid.push_back(r);
  }
  if (valid.empty()) invalid("the landmarks track no face in any row");
  std::vector<Box> boxes;
  for (int64_t i : frame_idx) {
    int64_t r = rows != n_frames ? round_even(static_cast<double>(i * rows) / static_cast<double>(n_frames)) : i;
    r = std::min(r, rows - 1);
    int64_t best = valid[0];
    for (int64_t v : valid)
      if (std::llabs(v - r) < std::llabs(best - r)) best = v;  // first of the nearest, as numpy's argmin
    const float* p = lm.xy.data() + best * 136;
    Box b{p[0], p[1], p[0], p[1]};
    for (int k = 1; k < 68; ++k) {
      b.left = std::min(b.left, p[2 * k]);
      b.right = std::max(b.right, p[2 * k]);
      b.top = std::min(b.top, p[2 * k + 1]);
      b.bottom = std::max(b.bottom, p[2 * k + 1]);
    }
    boxes.push_back(b);
  }
  return boxes;
}

// ------------------------------------------------------------------------------------------------ Haar detector
struct FaceDetector::Impl {
  std::string path;
  cv::CascadeClassifier cascade;
};

std::string FaceDetector::default_cascade() {
  if (const char* env = std::getenv("CFNSR_HAAR_CASCADE"); env != nullptr && *env) return env;
  const std::string name = "haarcascade_frontalface_default.xml";
  for (const char* dir : {CFNSR_HAAR_DIR, "/usr/share/opencv4/haarcascades",
                          "/usr/local/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades"}) {
    if (*dir == '\0') continue;
    if (std::ifstream(std::string(dir) + "/" + name).good()) return std::string(dir) + "/" + name;
  }
  return name;  // reported as missing by the constructor
}

FaceDetector::FaceDetector(const std::string& cascade) : impl_(std::make_unique<Impl>()) {
  impl_->path = cascade.empty() ? default_cascade() : cascade;
  if (!std::ifstream(impl_->path).good())
    throw Error(Status::FileNotFound,
                "Haar cascade " + impl_->path + " does not exist: install OpenCV's data (Debian: apt install "
                "opencv-data) or point CFNSR_HAAR_CASCADE (or --cascade) at haarcascade_frontalface_default.xml");
  bool loaded = false;
  try {
    loaded = impl_->cascade.load(impl_->path);
  } catch (const cv::Exception&) {
    loaded = false;
  }
  if (!loaded) throw Error(Status::InvalidArgument, impl_->path + " is not an OpenCV Haar cascade");
}

FaceDetector::~FaceDetector() = default;
const std::string& FaceDetector::cascade() const noexcept { return impl_->path; }

std::vector<Box> FaceDetector::detect(const std::vector<Image>& frames) {
  std::vector<bool> hit(frames.size(), false);
  std::vector<Box> found(frames.size());
  std::vector<Box> hits;
  cv::Mat gray;
  for (std::size_t i = 0; i < frames.size(); ++i) {
    detail::check_image(frames[i], i);
    std::vector<cv::Rect> faces;
    try {
      cv::cvtColor(as_mat(frames[i]), gray, cv::COLOR_RGB2GRAY);
      const int min_size = std::max(24, std::min(gray.rows, gray.cols) / 8);
      impl_->cascade.detectMultiScale(gray, faces, 1.1, 5, 0, cv::Size(min_size, min_size));
    } catch (const cv::Exception& e) {
      throw Error(Status::Runtime, "OpenCV's face detector failed on frame " + std::to_string(i) + ": " + e.what());
    }
    if (faces.empty()) continue;
    const auto best = std::max_element(faces.begin(), faces.end(),
                                       [](const cv::Rect& a, const cv::Rect& b) { return a.area() < b.area(); });
    found[i] = Box{static_cast<float>(best->x), static_cast<float>(best->y), static_cast<float>(best->x + best->width),
                   static_cast<float>(best->y + best->height)};
    hit[i] = true;
    hits.push_back(found[i]);
  }
  if (hits.empty()) return {};
  auto median = [&](float Box::*field) {  // numpy's median: the mean of the two middle values for an even count
    std::vector<float> v;
    for (const auto& b : hits) v.push_back(b.*field);
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0f;
  };
  const Box med{median(&Box::left), median(&Box::top), median(&Box::right), median(&Box::bottom)};
  for (std::size_t i = 0; i < frames.size(); ++i)
    if (!hit[i]) found[i] = med;
  return found;
}

// ------------------------------------------------------------------------------------------------ crops
void crop_faces(const std::vector<Image>& frames, const std::vector<Box>& boxes, const Spec& spec, uint8_t* out) {
  if (boxes.size() != frames.size())
    invalid(std::to_string(boxes.size()) + " face boxes for " + std::to_string(frames.size()) +
            " frames; expected one per frame");
  if (out == nullptr) invalid("crop_faces: out is null");
  const int size = spec.image_size;
  cv::Mat squashed;
  for (std::size_t i = 0; i < frames.size(); ++i) {
    detail::check_image(frames[i], i);
    cv::Mat f = as_mat(frames[i]);
    float left = boxes[i].left, top = boxes[i].top, right = boxes[i].right, bottom = boxes[i].bottom;
    if (spec.msaf_compat) {
      const int h = f.rows, w = f.cols;
      try {
        cv::resize(f, squashed, cv::Size(size, size), 0, 0, cv::INTER_AREA);
      } catch (const cv::Exception& e) {
        throw Error(Status::Runtime, "OpenCV could not resize frame " + std::to_string(i) + ": " + e.what());
      }
      f = squashed;
      left = left * size / w, right = right * size / w;
      top = top * size / h, bottom = bottom * size / h;
    }
    const int h = f.rows, w = f.cols;
    // Python: int(np.clip(v, lo, hi)), truncation toward zero after clipping.
    auto clip = [](double v, double lo, double hi) { return static_cast<int>(std::min(std::max(v, lo), hi)); };
    if (!std::isfinite(left) || !std::isfinite(top) || !std::isfinite(right) || !std::isfinite(bottom))
      invalid("face box " + std::to_string(i) + " is not finite");
    const int l = clip(left, 0, w - 1), t = clip(top, 0, h - 1);
    const int r = clip(right, l + 1, w), b = clip(bottom, t + 1, h);
    cv::Mat dst(size, size, CV_8UC3, out + i * static_cast<std::size_t>(size) * size * 3);
    try {
      cv::resize(f(cv::Rect(l, t, r - l, b - t)), dst, cv::Size(size, size), 0, 0, cv::INTER_LINEAR);
    } catch (const cv::Exception& e) {
      throw Error(Status::Runtime, "OpenCV could not crop frame " + std::to_string(i) + ": " + e.what());
    }
  }
}

}  // namespace cfnsr::media
