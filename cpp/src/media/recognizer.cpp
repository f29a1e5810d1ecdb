// cfnsr::media::Recognizer: cfnsr.engines.recognizer.Recognizer in C++ (same stages, policy and messages).
#include <chrono>
#include <cmath>

#include "cfnsr/media.hpp"
#include "checks.hpp"

namespace cfnsr::media {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

}  // namespace

double Prediction::timing(const std::string& stage) const {
  for (const auto& [name, ms] : timings_ms)
    if (name == stage) return ms;
  return 0.0;
}

struct Recognizer::Impl {
  std::unique_ptr<Model> model;
  Spec spec;
  RecognizerOptions options;
  std::unique_ptr<FaceDetector> detector;  // loaded on first use: a landmark-only application needs no cascade
  std::vector<uint8_t> crops;
  std::vector<float> pcm;

  FaceDetector& faces() {
    if (!detector) detector = std::make_unique<FaceDetector>(options.cascade);
    return *detector;
  }

  // The spec's frames with their boxes (or none) -> prediction. frames are the chosen ones; `tried` says what was
  // tried before the detector, for the no-face message.
  // window: a stream window (audio used whole; no face gives label_id -1 instead of an error).
  Prediction run(const std::vector<Image>& frames, std::vector<Box> boxes, const float* audio, std::size_t count,
                 double rate, const std::string& source, const std::string& tried, std::string note,
                 bool window = false) {
    Prediction p;
    double detection = 0, crop = 0, resampling = 0, model_ms = 0;
    auto t = Clock::now();
    const int height = frames.at(0).height, width = frames.at(0).width;
    p.crop = "landmarks";
    if (!boxes.empty()) {
      const std::string problem = box_problem(boxes, height, width);
      if (!problem.empty()) {
        boxes.clear();
        note = "boxes not used: " + problem;
      }
    }
    if (boxes.empty()) {
      boxes = faces().detect(frames);
      p.crop = "haar";
    }
    if (boxes.empty()) {
      if (!options.allow_center_crop && window) {
        p.crop = "";
        p.timings_ms = {{"detection", ms_since(t)}};
        return p;
      }
      if (!options.allow_center_crop)
        throw Error(Status::Media, "no face found in " + source + ": tried " + tried + "OpenCV's Haar face detector "
                                   "on " + std::to_string(frames.size()) + " frames. Pass --landmarks CSV (or "
                                   "boxes), or --allow-center-crop to classify the centre of the frame anyway");
      boxes = center_boxes(static_cast<int>(frames.size()), height, width);
      p.crop = "center";
    }
    detection = ms_since(t);
    t = Clock::now();
    crops.resize(frames.size() * static_cast<std::size_t>(spec.image_size) * spec.image_size * 3);
    crop_faces(frames, boxes, spec, crops.data());
    crop = ms_since(t);
    t = Clock::now();
    Spec cut = spec;
    if (window) cut.audio_offset = 0.0;
    pcm = audio_segment(resample(audio, count, rate, spec.sample_rate), cut, &p.audio_padded);
    resampling = ms_since(t);
    t = Clock::now();
    Result r = model->run(crops.data(), crops.size(), pcm.data(), pcm.size(), 1);
    model_ms = ms_since(t);
    for (float v : r.logits)
      if (!std::isfinite(v))
        throw Error(Status::Runtime, model->info().path + " returned non-finite logits: the model is broken");
    p.labels = model->info().labels;
    p.probabilities = r.probabilities;
    p.label_id = r.top1.at(0);
    p.emotion = p.labels.at(static_cast<std::size_t>(p.label_id));
    p.crop_note = note;
    p.boxes = std::move(boxes);
    p.timings_ms = {{"decode", 0.0}, {"detection", detection}, {"crop", crop}, {"resample", resampling},
                    {"model", model_ms}};
    return p;
  }
};

Recognizer::Recognizer(const std::string& artifact, const RecognizerOptions& options)
    : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
  impl_->model = Model::open(artifact, options.model);
  impl_->spec = Spec::from_model(impl_->model->info());
}

Recognizer::~Recognizer() = default;
const Spec& Recognizer::spec() const noexcept { return impl_->spec; }
Model& Recognizer::model() noexcept { return *impl_->model; }
const std::vector<uint8_t>& Recognizer::last_frames() const noexcept { return impl_->crops; }
const std::vector<float>& Recognizer::last_pcm() const noexcept { return impl_->pcm; }

Prediction Recognizer::predict_file(const std::string& path, const std::string& landmarks) {
  const auto t0 = Clock::now();
  Video video = decode_video(path, impl_->spec.frames);
  Audio audio = decode_audio(path);
  const double decode = ms_since(t0);
  auto t = Clock::now();
  std::vector<Box> boxes;
  std::string note;
  if (!landmarks.empty()) {
    boxes = landmark_boxes(read_landmarks(landmarks), frame_indices(video.total_frames, impl_->spec.frames),
                           video.total_frames);
    const std::string problem = box_problem(boxes, video.height, video.width);
    if (!problem.empty()) {
      boxes.clear();
      note = "landmarks " + landmarks + " not used: " + problem;
    }
  }
  const double landmark_ms = ms_since(t);
  const std::string tried = "a landmark file (" + (landmarks.empty() ? std::string("none given") : landmarks) + ") and ";
  Prediction p = impl_->run(video.images(), std::move(boxes), audio.samples.data(), audio.samples.size(),
                            audio.sample_rate, path, tried, note);
  for (auto& [stage, ms] : p.timings_ms) {
    if (stage == "decode") ms = decode;
    if (stage == "detection") ms += landmark_ms;
  }
  p.timings_ms.emplace_back("total", ms_since(t0));
  return p;
}

Prediction Recognizer::predict(const std::vector<Image>& frames, const float* pcm, std::size_t pcm_count,
                               double sample_rate, const std::vector<Box>* boxes) {
  const auto t0 = Clock::now();
  if (frames.empty()) throw Error(Status::InvalidArgument, "frames: expected the frames of one clip, got none");
  for (std::size_t i = 0; i < frames.size(); ++i) {
    const Image& f = frames[i];
    detail::check_image(f, i);
    if (f.height != frames[0].height || f.width != frames[0].width)
      throw Error(Status::InvalidArgument, "frame " + std::to_string(i) + " is " + std::to_string(f.width) + "x" +
                                           std::to_string(f.height) + ", frame 0 " + std::to_string(frames[0].width) +
                                           "x" + std::to_string(frames[0].height) + "; a clip's frames share one size");
  }
  if (pcm == nullptr || pcm_count == 0)
    throw Error(Status::InvalidArgument, "pcm: expected the clip's mono samples, got none");
  std::size_t bad = 0;
  for (std::size_t i = 0; i < pcm_count; ++i) bad += !std::isfinite(pcm[i]);
  if (bad) throw Error(Status::InvalidArgument, "pcm holds " + std::to_string(bad) + " non-finite samples");
  if (!(sample_rate > 0) || !std::isfinite(sample_rate))
    throw Error(Status::InvalidArgument, "sample_rate must be positive, got " + std::to_string(sample_rate));
  const auto idx = frame_indices(static_cast<int64_t>(frames.size()), impl_->spec.frames);
  std::vector<Image> chosen;
  std::vector<Box> chosen_boxes;
  for (int64_t i : idx) chosen.push_back(frames[static_cast<std::size_t>(i)]);
  if (boxes != nullptr) {
    if (boxes->size() != frames.size())
      throw Error(Status::InvalidArgument, "boxes: expected " + std::to_string(frames.size()) +
                                           " (one per frame), got " + std::to_string(boxes->size()));
    for (int64_t i : idx) chosen_boxes.push_back((*boxes)[static_cast<std::size_t>(i)]);
  }
  Prediction p = impl_->run(chosen, std::move(chosen_boxes), pcm, pcm_count, sample_rate, "the frames", "", "");
  p.timings_ms.emplace_back("total", ms_since(t0));
  return p;
}

Prediction Recognizer::predict_window(const std::vector<Image>& frames, const float* pcm, std::size_t pcm_count,
                                      double sample_rate) {
  const auto t0 = Clock::now();
  if (frames.empty()) throw Error(Status::InvalidArgument, "frames: expected the frames of one window, got none");
  for (std::size_t i = 0; i < frames.size(); ++i) detail::check_image(frames[i], i);
  Prediction p = impl_->run(frames, {}, pcm, pcm_count, sample_rate, "the window", "", "", true);
  p.timings_ms.emplace_back("total", ms_since(t0));
  return p;
}

}  // namespace cfnsr::media
