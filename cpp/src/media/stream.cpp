// cfnsr::media::Stream: cfnsr.engines.stream in C++ (the same window rule, queue and drop policy).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "cfnsr/media.hpp"
#include "checks.hpp"

namespace cfnsr::media {
namespace {

using Clock = std::chrono::steady_clock;
constexpr double kContiguous = 0.002;  // s: audio chunks this close to the end of the last one are contiguous

double now_s() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

// Python's round(): half to even (the default floating-point rounding mode).
int64_t round_even(double v) { return static_cast<int64_t>(std::nearbyint(v)); }

struct Frame {
  double t = 0, arrived = 0;
  int height = 0, width = 0;
  std::vector<uint8_t> rgb;
};

// Mono samples placed by presentation time, from the oldest a pending window needs.
struct AudioBuffer {
  double rate = 0, t0 = 0;
  int64_t base = 0;
  std::vector<float> buf;
  std::vector<std::pair<int64_t, int64_t>> gaps;  // absolute [start, end) filled with zeros
  std::deque<std::pair<int64_t, double>> arrivals;

  int64_t end_index() const { return base + static_cast<int64_t>(buf.size()); }
  double end_time() const { return rate > 0 ? t0 + static_cast<double>(end_index()) / rate : -INFINITY; }

  void push(const float* pcm, std::size_t n, double t, double r, double now) {
    if (r != rate) {
      rate = r, t0 = t, base = 0;
      buf.clear(), gaps.clear(), arrivals.clear();
    }
    int64_t i = round_even((t - t0) * rate);
    const int64_t end = end_index();
    if (std::abs(static_cast<double>(i - end)) <= kContiguous * rate) i = end;
    std::size_t skip = 0;
    if (i > end) {
      gaps.emplace_back(end, i);
      buf.insert(buf.end(), static_cast<std::size_t>(i - end), 0.0f);
    } else if (i < end) {
      skip = std::min(n, static_cast<std::size_t>(end - i));
    }
    if (n > skip) {
      buf.insert(buf.end(), pcm + skip, pcm + n);
      arrivals.emplace_back(end_index(), now);
    }
  }

  std::vector<float> cut(double start, int64_t n, bool& padded, double& arrived) const {
    const int64_t i0 = rate > 0 ? round_even((start - t0) * rate) : 0;
    std::vector<float> out(static_cast<std::size_t>(n), 0.0f);
    const int64_t lo = std::max(i0, base), hi = std::min(i0 + n, end_index());
    if (hi > lo) std::copy(buf.begin() + (lo - base), buf.begin() + (hi - base), out.begin() + (lo - i0));
    padded = rate <= 0 || lo > i0 || hi < i0 + n;
    for (const auto& [a, b] : gaps) padded = padded || (a < i0 + n && b > i0);
    arrived = 0;
    const int64_t last = std::min(i0 + n, end_index());
    for (const auto& [idx, when] : arrivals)
      if (idx >= last) {
        arrived = when;
        break;
      }
    return out;
  }

  void trim(double before) {
    if (rate <= 0) return;
    const int64_t i = static_cast<int64_t>(std::floor((before - t0) * rate)) - 1;
    if (i <= base) return;
    const int64_t drop = std::min<int64_t>(i - base, static_cast<int64_t>(buf.size()));
    buf.erase(buf.begin(), buf.begin() + drop);
    base = i;
    gaps.erase(std::remove_if(gaps.begin(), gaps.end(), [&](const auto& g) { return g.second <= i; }), gaps.end());
    while (!arrivals.empty() && arrivals.front().first < i) arrivals.pop_front();
  }
};

struct Pending {  // a complete window, waiting for the model
  int64_t index = 0;
  double start = 0, end = 0, arrived = 0;
  std::vector<Frame> frames;  // the spec's count, or none when no frame lies in the window
  std::vector<float> pcm;
  double rate = 0;
  bool padded = false;
};

double percentile(std::vector<double> v, double q) {  // numpy's default (linear interpolation)
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = q / 100.0 * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

}  // namespace

struct Stream::Impl {
  Recognizer& rec;
  StreamOptions options;
  std::function<void(const Window&)> callback;
  int frames_per_window;
  double duration;

  // the window rule's state
  bool started = false, has_audio = false;
  double origin = 0, video_end = -INFINITY, frame_step = 0;
  int64_t k = 0;
  std::deque<Frame> video;
  AudioBuffer audio;

  // the queue and its consumer
  mutable std::mutex mutex;
  std::condition_variable cond;
  std::deque<Pending> queue;
  bool ended = false, closed = false;
  StreamStats stats;
  std::deque<double> latencies, busy;  // the last 4096 of each
  std::thread worker;
  std::exception_ptr error;

  Impl(Recognizer& r, const StreamOptions& o, std::function<void(const Window&)> cb)
      : rec(r), options(o), callback(std::move(cb)), frames_per_window(r.spec().frames),
        duration(r.spec().audio_duration) {
    if (!(options.hop > 0) || !std::isfinite(options.hop))
      throw Error(Status::InvalidArgument, "hop must be a positive number of seconds, got " +
                                               std::to_string(options.hop));
    if (options.queue < 1) throw Error(Status::InvalidArgument, "queue must hold at least one window, got 0");
    if (options.max_latency < 0) throw Error(Status::InvalidArgument, "max_latency must be >= 0 seconds");
  }

  double start_of(int64_t i) const { return origin + static_cast<double>(i) * options.hop; }

  // -- the window rule (called with the mutex held) ----------------------------------------------------------------
  std::vector<Pending> complete() {
    std::vector<Pending> out;
    for (;;) {
      const double end = start_of(k) + duration;
      const bool video_ok = video_end >= end, audio_ok = audio.end_time() >= end;
      if ((video_ok && audio_ok) || (video_ok && video_end >= end + options.wait) ||
          (audio_ok && audio.end_time() >= end + options.wait))
        out.push_back(emit());
      else
        return out;
    }
  }

  std::vector<Pending> finish() {
    std::vector<Pending> out;
    if (!started) return out;
    const double vend = video_end + frame_step;
    const double stream_end = has_audio ? std::min(vend, audio.end_time()) : vend;
    while (start_of(k) + duration <= stream_end + 1e-6 || (k == 0 && out.empty())) out.push_back(emit());
    return out;
  }

  Pending emit() {
    Pending w;
    w.index = k;
    const double start = start_of(k), end = start + duration;
    std::vector<const Frame*> inside;
    for (const auto& f : video)
      if (f.t >= start && f.t < end) inside.push_back(&f);
    double arrived = 0;
    if (!inside.empty()) {
      for (int64_t i : frame_indices(static_cast<int64_t>(inside.size()), frames_per_window))
        w.frames.push_back(*inside[static_cast<std::size_t>(i)]);
      arrived = inside.back()->arrived;
    }
    w.rate = audio.rate > 0 ? audio.rate : 16000;
    double audio_arrived = 0;
    w.pcm = audio.cut(start, round_even(duration * w.rate), w.padded, audio_arrived);
    w.start = start - origin;
    w.end = end - origin;
    w.arrived = std::max(arrived, audio_arrived);
    if (w.arrived == 0) w.arrived = now_s();
    ++k;
    const double next = start_of(k);
    while (!video.empty() && video.front().t < next) video.pop_front();
    audio.trim(next);
    return w;
  }

  void enqueue(std::vector<Pending>&& windows, std::unique_lock<std::mutex>& lock) {
    for (auto& w : windows) {
      while (options.block && queue.size() >= options.queue && !closed) cond.wait(lock);
      if (queue.size() >= options.queue) {
        queue.pop_front();
        ++stats.dropped;
      }
      queue.push_back(std::move(w));
      stats.max_queue = std::max(stats.max_queue, queue.size());
    }
    if (!windows.empty()) cond.notify_all();
  }

  // -- one window (without the mutex: the model runs while producers push) -----------------------------------------
  bool run(Pending& w, Window& out) {
    if (options.max_latency > 0 && now_s() - w.arrived > options.max_latency) {
      std::lock_guard<std::mutex> g(mutex);
      ++stats.late;
      return false;
    }
    out.index = w.index;
    out.start = w.start;
    out.end = w.end;
    out.audio_padded = w.padded;
    const auto t0 = Clock::now();
    if (w.frames.empty()) {
      out.face_lost = true;
    } else {
      std::vector<Image> images;
      for (const auto& f : w.frames) images.push_back(Image{f.rgb.data(), f.height, f.width, 0});
      Prediction p = rec.predict_window(images, w.pcm.data(), w.pcm.size(), w.rate);
      out.face_ms = p.timing("detection");
      if (p.label_id < 0) {
        out.face_lost = true;
      } else {
        out.emotion = p.emotion;
        out.label_id = p.label_id;
        out.probabilities = p.probabilities;
        out.crop = p.crop;
        out.face = p.boxes.back();
        out.face_fallback = p.crop == "center";
        out.audio_padded = w.padded || p.audio_padded;
        out.crop_ms = p.timing("crop");
        out.model_ms = p.timing("resample") + p.timing("model");
      }
    }
    const double work = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    out.latency_ms = (now_s() - w.arrived) * 1e3;
    std::lock_guard<std::mutex> g(mutex);
    ++stats.windows;
    stats.face_lost += out.face_lost;
    for (auto [series, v] : {std::make_pair(&latencies, out.latency_ms), std::make_pair(&busy, work)}) {
      series->push_back(v);
      if (series->size() > 4096) series->pop_front();
    }
    return true;
  }

  // Next complete window, or false when the stream ended and everything ran (block) / nothing is queued (!block).
  bool take(Pending& w, bool block) {
    std::unique_lock<std::mutex> lock(mutex);
    if (block) cond.wait(lock, [&] { return !queue.empty() || ended; });
    if (queue.empty()) return false;
    w = std::move(queue.front());
    queue.pop_front();
    cond.notify_all();
    return true;
  }

  void work() {
    try {
      Pending w;
      while (take(w, true)) {
        Window out;
        if (run(w, out)) callback(out);
      }
    } catch (...) {
      std::lock_guard<std::mutex> g(mutex);
      error = std::current_exception();
    }
  }
};

Stream::Stream(Recognizer& recognizer, const StreamOptions& options, std::function<void(const Window&)> callback)
    : impl_(std::make_unique<Impl>(recognizer, options, std::move(callback))) {
  if (impl_->callback) impl_->worker = std::thread([this] { impl_->work(); });
}

Stream::~Stream() {
  {
    std::lock_guard<std::mutex> g(impl_->mutex);
    impl_->ended = impl_->closed = true;
    impl_->queue.clear();
  }
  impl_->cond.notify_all();
  if (impl_->worker.joinable()) impl_->worker.join();
}

void Stream::push_frame(const Image& frame, double timestamp) {
  detail::check_image(frame, 0);
  if (!std::isfinite(timestamp)) throw Error(Status::InvalidArgument, "push_frame: timestamp is not finite");
  Frame f;
  f.t = timestamp;
  f.arrived = now_s();
  f.height = frame.height;
  f.width = frame.width;
  const std::size_t row = static_cast<std::size_t>(frame.width) * 3, stride = frame.stride ? frame.stride : row;
  f.rgb.resize(row * static_cast<std::size_t>(frame.height));
  for (int y = 0; y < frame.height; ++y)
    std::copy(frame.data + y * stride, frame.data + y * stride + row, f.rgb.begin() + static_cast<std::ptrdiff_t>(y * row));
  std::unique_lock<std::mutex> lock(impl_->mutex);
  auto& s = *impl_;
  if (!s.started) {
    s.started = true;
    s.origin = timestamp;
  }
  if (timestamp <= s.video_end) return;  // presentation times only grow in a stream
  if (s.video_end > -INFINITY) s.frame_step = timestamp - s.video_end;
  s.video_end = timestamp;
  s.video.push_back(std::move(f));
  s.enqueue(s.complete(), lock);
}

void Stream::push_audio(const float* pcm, std::size_t count, double timestamp, double sample_rate) {
  if (pcm == nullptr && count > 0) throw Error(Status::InvalidArgument, "push_audio: pcm is NULL");
  if (!(sample_rate > 0) || !std::isfinite(sample_rate) || !std::isfinite(timestamp))
    throw Error(Status::InvalidArgument, "push_audio: a positive sample rate and a finite timestamp, got " +
                                             std::to_string(sample_rate) + ", " + std::to_string(timestamp));
  std::size_t bad = 0;
  for (std::size_t i = 0; i < count; ++i) bad += !std::isfinite(pcm[i]);
  if (bad) throw Error(Status::InvalidArgument, "pcm holds " + std::to_string(bad) + " non-finite samples");
  std::unique_lock<std::mutex> lock(impl_->mutex);
  auto& s = *impl_;
  s.audio.push(pcm, count, timestamp, sample_rate, now_s());
  s.has_audio = true;
  if (s.started) s.enqueue(s.complete(), lock);
}

void Stream::end() {
  std::unique_lock<std::mutex> lock(impl_->mutex);
  if (impl_->ended) return;
  impl_->enqueue(impl_->finish(), lock);
  impl_->ended = true;
  impl_->cond.notify_all();
}

std::vector<Window> Stream::poll() {
  if (impl_->callback) throw Error(Status::InvalidArgument, "poll: this stream hands its windows to its callback");
  std::vector<Window> out;
  Pending w;
  while (impl_->take(w, false)) {
    Window r;
    if (impl_->run(w, r)) out.push_back(std::move(r));
  }
  return out;
}

void Stream::close() {
  end();
  if (impl_->worker.joinable()) impl_->worker.join();
  std::lock_guard<std::mutex> g(impl_->mutex);
  if (impl_->error) std::rethrow_exception(impl_->error);
}

StreamStats Stream::stats() const {
  std::lock_guard<std::mutex> g(impl_->mutex);
  StreamStats s = impl_->stats;
  const std::vector<double> lat(impl_->latencies.begin(), impl_->latencies.end()),
      work(impl_->busy.begin(), impl_->busy.end());
  s.latency_p50_ms = percentile(lat, 50);
  s.latency_p99_ms = percentile(lat, 99);
  s.busy_p50_ms = percentile(work, 50);
  s.busy_p99_ms = percentile(work, 99);
  return s;
}

}  // namespace cfnsr::media
