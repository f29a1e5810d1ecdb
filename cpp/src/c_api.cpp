// The C interface over cfnsr::Model: every entry point catches everything, so no exception crosses into C.
#include <exception>
#include <new>
#include <string>

#include "c_model.hpp"

namespace {

using cfnsr::fail;
using cfnsr::guarded;

thread_local std::string last_error;

const cfnsr::TensorInfo* input_info(const cfnsr_model* m, cfnsr_input input) {
  if (m == nullptr) return nullptr;
  const auto& info = m->model->info();
  if (input == CFNSR_INPUT_VIDEO) return &info.video;
  if (input == CFNSR_INPUT_AUDIO) return &info.audio;
  return nullptr;
}

}  // namespace

void cfnsr::set_last_error(const std::string& message) { last_error = message; }

const cfnsr::Model& cfnsr::model_of(const cfnsr_model* handle) {
  if (handle == nullptr || !handle->model) throw Error(Status::InvalidArgument, "the model handle is NULL");
  return *handle->model;
}

extern "C" {

const char* cfnsr_version(void) {
  static const std::string v = cfnsr::version();
  return v.c_str();
}

const char* cfnsr_backends(void) {
  static const std::string joined = [] {
    std::string s;
    for (const auto& b : cfnsr::backends()) s += (s.empty() ? "" : ",") + b;
    return s;
  }();
  return joined.c_str();
}

const char* cfnsr_status_name(cfnsr_status status) {
  switch (status) {
    case CFNSR_OK: return "CFNSR_OK";
    case CFNSR_ERROR_INVALID_ARGUMENT: return "CFNSR_ERROR_INVALID_ARGUMENT";
    case CFNSR_ERROR_FILE_NOT_FOUND: return "CFNSR_ERROR_FILE_NOT_FOUND";
    case CFNSR_ERROR_INVALID_ARTIFACT: return "CFNSR_ERROR_INVALID_ARTIFACT";
    case CFNSR_ERROR_VERSION_MISMATCH: return "CFNSR_ERROR_VERSION_MISMATCH";
    case CFNSR_ERROR_BACKEND_UNAVAILABLE: return "CFNSR_ERROR_BACKEND_UNAVAILABLE";
    case CFNSR_ERROR_INPUT_SIZE: return "CFNSR_ERROR_INPUT_SIZE";
    case CFNSR_ERROR_OUTPUT_SIZE: return "CFNSR_ERROR_OUTPUT_SIZE";
    case CFNSR_ERROR_RUNTIME: return "CFNSR_ERROR_RUNTIME";
    case CFNSR_ERROR_INTERNAL: return "CFNSR_ERROR_INTERNAL";
    case CFNSR_ERROR_MEDIA: return "CFNSR_ERROR_MEDIA";
  }
  return "CFNSR_UNKNOWN_STATUS";
}

const char* cfnsr_last_error(void) { return last_error.c_str(); }

cfnsr_options cfnsr_default_options(void) {
  cfnsr_options o;
  o.device_index = 0;
  o.num_threads = 0;
  return o;
}

cfnsr_status cfnsr_open(const char* path, const cfnsr_options* options, cfnsr_model** model) {
  if (model == nullptr) return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_open: model (the out pointer) is NULL");
  *model = nullptr;
  if (path == nullptr) return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_open: path is NULL");
  return guarded([&] {
    cfnsr::Options o;
    if (options != nullptr) {
      o.device_index = options->device_index;
      o.num_threads = options->num_threads;
    }
    auto handle = std::make_unique<cfnsr_model>();
    handle->model = cfnsr::Model::open(path, o);
    *model = handle.release();
  });
}

void cfnsr_close(cfnsr_model* model) { delete model; }

const char* cfnsr_backend(const cfnsr_model* m) { return m ? m->model->info().backend.c_str() : nullptr; }
const char* cfnsr_device(const cfnsr_model* m) { return m ? m->model->info().device.c_str() : nullptr; }
const char* cfnsr_precision(const cfnsr_model* m) { return m ? m->model->info().precision.c_str() : nullptr; }

cfnsr_status cfnsr_input_shape(const cfnsr_model* m, cfnsr_input input, int64_t* dims, size_t capacity,
                               size_t* rank) {
  const auto* t = input_info(m, input);
  if (t == nullptr) return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_input_shape: NULL model or unknown input");
  if (rank == nullptr) return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_input_shape: rank is NULL");
  *rank = t->shape.size();
  if (dims == nullptr && capacity > 0) return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_input_shape: dims is NULL");
  for (size_t i = 0; i < t->shape.size() && i < capacity; ++i) dims[i] = t->shape[i];
  return CFNSR_OK;
}

const char* cfnsr_input_kind(const cfnsr_model* m) { return m ? m->model->info().input_kind.c_str() : nullptr; }

const char* cfnsr_input_dtype(const cfnsr_model* m, cfnsr_input input) {
  const auto* t = input_info(m, input);
  return t ? t->dtype.c_str() : nullptr;
}

size_t cfnsr_sample_elements(const cfnsr_model* m, cfnsr_input input) {
  const auto* t = input_info(m, input);
  return t ? t->sample_elements() : 0;
}

cfnsr_status cfnsr_batch_range(const cfnsr_model* m, int64_t* min_batch, int64_t* max_batch) {
  if (m == nullptr) return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_batch_range: model is NULL");
  if (min_batch) *min_batch = m->model->info().min_batch;
  if (max_batch) *max_batch = m->model->info().max_batch;
  return CFNSR_OK;
}

size_t cfnsr_num_classes(const cfnsr_model* m) { return m ? m->model->info().labels.size() : 0; }

const char* cfnsr_label(const cfnsr_model* m, size_t index) {
  if (m == nullptr || index >= m->model->info().labels.size()) return nullptr;
  return m->model->info().labels[index].c_str();
}

const char* cfnsr_preprocess_json(const cfnsr_model* m) { return m ? m->model->info().preprocess_json.c_str() : nullptr; }
const char* cfnsr_metadata_json(const cfnsr_model* m) { return m ? m->model->info().metadata_json.c_str() : nullptr; }

cfnsr_status cfnsr_run(cfnsr_model* m, const float* video, size_t video_count, const float* audio,
                       size_t audio_count, int64_t batch, float* logits, float* probabilities,
                       size_t output_capacity) {
  if (m == nullptr) return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_run: model is NULL");
  return guarded([&] {
    m->model->run(video, video_count, audio, audio_count, batch, logits, probabilities, output_capacity);
  });
}

cfnsr_status cfnsr_run_media(cfnsr_model* m, const uint8_t* frames, size_t frames_count, const float* pcm,
                             size_t pcm_count, int64_t batch, float* logits, float* probabilities,
                             size_t output_capacity) {
  if (m == nullptr) return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_run_media: model is NULL");
  return guarded([&] {
    m->model->run(frames, frames_count, pcm, pcm_count, batch, logits, probabilities, output_capacity);
  });
}

}  // extern "C"
