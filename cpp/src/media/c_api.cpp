// The C interface of cfnsr::media (cfnsr/media.h): every entry point catches everything.
#include "cfnsr/media.h"

#include "cfnsr/c_guard.hpp"
#include "cfnsr/media.hpp"

using cfnsr::fail;
using cfnsr::guarded;

struct cfnsr_recognizer {
  std::unique_ptr<cfnsr::media::Recognizer> rec;
  cfnsr::media::Prediction last;
  std::vector<cfnsr_box> boxes;
};

namespace {

std::vector<cfnsr::media::Image> images(const uint8_t* frames, size_t count, int height, int width, size_t stride) {
  if (frames == nullptr) throw cfnsr::Error(cfnsr::Status::InvalidArgument, "frames is NULL");
  if (height <= 0 || width <= 0)
    throw cfnsr::Error(cfnsr::Status::InvalidArgument, "frames of " + std::to_string(width) + "x" +
                                                           std::to_string(height) + "; expected a positive size");
  const size_t row = stride ? stride : static_cast<size_t>(width) * 3;
  std::vector<cfnsr::media::Image> out;
  for (size_t i = 0; i < count; ++i) out.push_back({frames + i * row * static_cast<size_t>(height), height, width, stride});
  return out;
}

std::vector<cfnsr::media::Box> boxes_of(const cfnsr_box* boxes, size_t count) {
  std::vector<cfnsr::media::Box> out;
  for (size_t i = 0; i < count; ++i) out.push_back({boxes[i].left, boxes[i].top, boxes[i].right, boxes[i].bottom});
  return out;
}

void publish(cfnsr_recognizer* r, cfnsr::media::Prediction p, cfnsr_prediction* out) {
  r->last = std::move(p);
  const auto& q = r->last;
  r->boxes.clear();
  for (const auto& b : q.boxes) r->boxes.push_back({b.left, b.top, b.right, b.bottom});
  out->label_id = q.label_id;
  out->emotion = q.emotion.c_str();
  out->num_classes = q.probabilities.size();
  out->probabilities = q.probabilities.data();
  out->crop = q.crop.c_str();
  out->crop_note = q.crop_note.c_str();
  out->audio_padded = q.audio_padded ? 1 : 0;
  out->num_boxes = r->boxes.size();
  out->boxes = r->boxes.data();
  out->decode_ms = q.timing("decode");
  out->detection_ms = q.timing("detection");
  out->crop_ms = q.timing("crop");
  out->resample_ms = q.timing("resample");
  out->model_ms = q.timing("model");
  out->total_ms = q.timing("total");
}

}  // namespace

extern "C" {

cfnsr_recognizer_options cfnsr_recognizer_default_options(void) {
  cfnsr_recognizer_options o;
  o.device_index = 0;
  o.num_threads = 0;
  o.cascade = nullptr;
  o.allow_center_crop = 0;
  return o;
}

cfnsr_status cfnsr_recognizer_open(const char* artifact, const cfnsr_recognizer_options* options,
                                   cfnsr_recognizer** recognizer) {
  if (recognizer == nullptr) return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_recognizer_open: recognizer is NULL");
  *recognizer = nullptr;
  if (artifact == nullptr) return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_recognizer_open: artifact is NULL");
  return guarded([&] {
    cfnsr::media::RecognizerOptions o;
    if (options != nullptr) {
      o.model.device_index = options->device_index;
      o.model.num_threads = options->num_threads;
      o.cascade = options->cascade ? options->cascade : "";
      o.allow_center_crop = options->allow_center_crop != 0;
    }
    auto handle = std::make_unique<cfnsr_recognizer>();
    handle->rec = std::make_unique<cfnsr::media::Recognizer>(artifact, o);
    *recognizer = handle.release();
  });
}

void cfnsr_recognizer_close(cfnsr_recognizer* recognizer) { delete recognizer; }

const char* cfnsr_recognizer_label(const cfnsr_recognizer* r, size_t index) {
  if (r == nullptr) return nullptr;
  const auto& labels = r->rec->model().info().labels;
  return index < labels.size() ? labels[index].c_str() : nullptr;
}

cfnsr_status cfnsr_recognize_file(cfnsr_recognizer* r, const char* path, const char* landmarks,
                                  cfnsr_prediction* out) {
  if (r == nullptr || path == nullptr || out == nullptr)
    return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_recognize_file: recognizer, path and out must not be NULL");
  return guarded([&] { publish(r, r->rec->predict_file(path, landmarks ? landmarks : ""), out); });
}

cfnsr_status cfnsr_recognize_frames(cfnsr_recognizer* r, const uint8_t* frames, size_t count, int height, int width,
                                    size_t stride, const float* pcm, size_t pcm_count, double sample_rate,
                                    const cfnsr_box* boxes, cfnsr_prediction* out) {
  if (r == nullptr || out == nullptr)
    return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_recognize_frames: recognizer and out must not be NULL");
  return guarded([&] {
    const auto imgs = images(frames, count, height, width, stride);
    const auto given = boxes ? boxes_of(boxes, count) : std::vector<cfnsr::media::Box>();
    publish(r, r->rec->predict(imgs, pcm, pcm_count, sample_rate, boxes ? &given : nullptr), out);
  });
}

void cfnsr_media_ffmpeg_messages(int on) { cfnsr::media::ffmpeg_messages(on != 0); }

cfnsr_status cfnsr_media_frame_indices(int64_t n_frames, int count, int64_t* out) {
  if (out == nullptr) return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_media_frame_indices: out is NULL");
  return guarded([&] {
    const auto idx = cfnsr::media::frame_indices(n_frames, count);
    std::copy(idx.begin(), idx.end(), out);
  });
}

cfnsr_status cfnsr_media_crop_faces(const cfnsr_model* m, const uint8_t* frames, size_t count, int height, int width,
                                    size_t stride, const cfnsr_box* boxes, uint8_t* out, size_t out_capacity) {
  if (m == nullptr || boxes == nullptr || out == nullptr)
    return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_media_crop_faces: model, boxes and out must not be NULL");
  return guarded([&] {
    const auto spec = cfnsr::media::Spec::from_model(cfnsr::model_of(m).info());
    const size_t need = count * static_cast<size_t>(spec.image_size) * spec.image_size * 3;
    if (out_capacity < need)
      throw cfnsr::Error(cfnsr::Status::OutputSize, "cfnsr_media_crop_faces: out holds " +
                                                        std::to_string(out_capacity) + " bytes, " +
                                                        std::to_string(count) + " crops need " + std::to_string(need));
    cfnsr::media::crop_faces(images(frames, count, height, width, stride), boxes_of(boxes, count), spec, out);
  });
}

cfnsr_status cfnsr_media_prepare_pcm(const cfnsr_model* m, const float* pcm, size_t count, double sample_rate,
                                     float* out, size_t out_capacity, int* padded) {
  if (m == nullptr || pcm == nullptr || out == nullptr)
    return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_media_prepare_pcm: model, pcm and out must not be NULL");
  return guarded([&] {
    const auto spec = cfnsr::media::Spec::from_model(cfnsr::model_of(m).info());
    bool was_padded = false;
    const auto window = cfnsr::media::audio_segment(cfnsr::media::resample(pcm, count, sample_rate, spec.sample_rate),
                                                    spec, &was_padded);
    if (out_capacity < window.size())
      throw cfnsr::Error(cfnsr::Status::OutputSize, "cfnsr_media_prepare_pcm: out holds " +
                                                        std::to_string(out_capacity) + " floats, the window is " +
                                                        std::to_string(window.size()));
    std::copy(window.begin(), window.end(), out);
    if (padded) *padded = was_padded ? 1 : 0;
  });
}

}  // extern "C"
