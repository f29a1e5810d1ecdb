// The C interface of cfnsr::media::Stream (cfnsr/media.h): every entry point catches everything.
#include <cmath>

#include "cfnsr/c_guard.hpp"
#include "cfnsr/media.h"
#include "cfnsr/media.hpp"

using cfnsr::fail;
using cfnsr::guarded;

struct cfnsr_stream {
  std::unique_ptr<cfnsr::media::Recognizer> rec;
  std::unique_ptr<cfnsr::media::Stream> stream;
  cfnsr::media::Window last;  // what the last cfnsr_window points into
  std::vector<cfnsr::media::Window> polled;
};

namespace {

void publish(const cfnsr::media::Window& w, cfnsr_window* out) {
  out->index = w.index;
  out->start_s = w.start;
  out->end_s = w.end;
  out->label_id = w.label_id;
  out->emotion = w.emotion.c_str();
  out->num_classes = w.probabilities.size();
  out->probabilities = w.probabilities.data();
  out->crop = w.crop.c_str();
  out->face = {w.face.left, w.face.top, w.face.right, w.face.bottom};
  out->face_lost = w.face_lost;
  out->face_fallback = w.face_fallback;
  out->audio_padded = w.audio_padded;
  out->latency_ms = w.latency_ms;
}

}  // namespace

extern "C" {

cfnsr_stream_options cfnsr_stream_default_options(void) {
  const cfnsr::media::StreamOptions d;
  return cfnsr_stream_options{d.hop, d.queue, d.max_latency, d.wait, d.block ? 1 : 0};
}

cfnsr_status cfnsr_stream_open(const char* artifact, const cfnsr_recognizer_options* recognizer_options,
                               const cfnsr_stream_options* options, cfnsr_window_callback callback, void* user,
                               cfnsr_stream** stream) {
  if (stream == nullptr) return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_stream_open: stream is NULL");
  *stream = nullptr;
  if (artifact == nullptr) return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_stream_open: artifact is NULL");
  return guarded([&] {
    cfnsr::media::RecognizerOptions ro;
    if (recognizer_options != nullptr) {
      ro.model.device_index = recognizer_options->device_index;
      ro.model.num_threads = recognizer_options->num_threads;
      ro.cascade = recognizer_options->cascade ? recognizer_options->cascade : "";
      ro.allow_center_crop = recognizer_options->allow_center_crop != 0;
    }
    const cfnsr_stream_options o = options ? *options : cfnsr_stream_default_options();
    auto handle = std::make_unique<cfnsr_stream>();
    handle->rec = std::make_unique<cfnsr::media::Recognizer>(artifact, ro);
    std::function<void(const cfnsr::media::Window&)> cb;
    if (callback != nullptr)
      cb = [callback, user](const cfnsr::media::Window& w) {
        cfnsr_window out;
        publish(w, &out);
        callback(&out, user);
      };
    handle->stream = std::make_unique<cfnsr::media::Stream>(
        *handle->rec, cfnsr::media::StreamOptions{o.hop, o.queue, o.max_latency, o.wait, o.block != 0}, cb);
    *stream = handle.release();
  });
}

cfnsr_status cfnsr_stream_push_frames(cfnsr_stream* s, const uint8_t* frames, size_t count, int height, int width,
                                      size_t stride, const double* timestamps) {
  if (s == nullptr || frames == nullptr || timestamps == nullptr)
    return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_stream_push_frames: stream, frames and timestamps must not be "
                                              "NULL");
  return guarded([&] {
    const size_t row = stride ? stride : static_cast<size_t>(width > 0 ? width : 0) * 3;
    for (size_t i = 0; i < count; ++i)
      s->stream->push_frame({frames + i * row * static_cast<size_t>(height > 0 ? height : 0), height, width, stride},
                            timestamps[i]);
  });
}

cfnsr_status cfnsr_stream_push_audio(cfnsr_stream* s, const float* pcm, size_t count, double timestamp,
                                     double sample_rate) {
  if (s == nullptr) return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_stream_push_audio: stream is NULL");
  return guarded([&] { s->stream->push_audio(pcm, count, timestamp, sample_rate); });
}

cfnsr_status cfnsr_stream_poll(cfnsr_stream* s, cfnsr_window* out, int* got) {
  if (s == nullptr || out == nullptr || got == nullptr)
    return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_stream_poll: stream, out and got must not be NULL");
  *got = 0;
  return guarded([&] {
    if (s->polled.empty()) {
      auto more = s->stream->poll();
      s->polled.insert(s->polled.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
    }
    if (s->polled.empty()) return;
    s->last = std::move(s->polled.front());
    s->polled.erase(s->polled.begin());
    publish(s->last, out);
    *got = 1;
  });
}

cfnsr_status cfnsr_stream_end(cfnsr_stream* s) {
  if (s == nullptr) return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_stream_end: stream is NULL");
  return guarded([&] { s->stream->end(); });
}

cfnsr_status cfnsr_stream_stats_get(const cfnsr_stream* s, cfnsr_stream_stats* out) {
  if (s == nullptr || out == nullptr)
    return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_stream_stats_get: stream and out must not be NULL");
  return guarded([&] {
    const auto st = s->stream->stats();
    *out = cfnsr_stream_stats{st.windows, st.dropped, st.late, st.face_lost, st.max_queue,
                              st.latency_p50_ms, st.latency_p99_ms, st.busy_p50_ms, st.busy_p99_ms};
  });
}

cfnsr_status cfnsr_stream_read(cfnsr_stream* s, const char* url, int paced, double timeout_s) {
  if (s == nullptr || url == nullptr)
    return fail(CFNSR_ERROR_INVALID_ARGUMENT, "cfnsr_stream_read: stream and url must not be NULL");
  return guarded([&] {
    cfnsr::media::read_into(url, *s->stream, paced != 0, timeout_s > 0 ? timeout_s : 5.0);
    s->stream->end();
  });
}

void cfnsr_stream_close(cfnsr_stream* s) {
  if (s == nullptr) return;
  try {
    s->stream->close();
  } catch (...) {  // nothing crosses into C; the stream is freed either way
  }
  delete s;
}

}  // extern "C"
