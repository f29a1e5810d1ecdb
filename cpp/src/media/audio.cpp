// Resampling (libsoxr, called the way python-soxr's resample() calls it for librosa) and the spec's audio window.
#include <soxr.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "cfnsr/media.hpp"

namespace cfnsr::media {

std::vector<float> resample(const float* pcm, std::size_t count, double rate, double target) {
  if (!(rate > 0) || !std::isfinite(rate))
    throw Error(Status::InvalidArgument, "a sample rate of " + std::to_string(rate) + " Hz; expected a positive rate");
  if (!(target > 0) || !std::isfinite(target))
    throw Error(Status::InvalidArgument, "a target sample rate of " + std::to_string(target) + " Hz");
  if (pcm == nullptr && count > 0) throw Error(Status::InvalidArgument, "resample: pcm is null");
  if (rate == target) return std::vector<float>(pcm, pcm + count);
  // Mono float32 in and out, quality SOXR_HQ, default runtime; the input fed in blocks and then flushed, the output
  // buffer sized ilen * out / in + 1 (what python-soxr does; librosa.resample(res_type="soxr_hq") calls it).
  soxr_error_t err = nullptr;
  const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  const soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
  std::unique_ptr<struct soxr, void (*)(soxr_t)> soxr(soxr_create(rate, target, 1, &err, &io, &quality, nullptr),
                                                      soxr_delete);
  if (err != nullptr || !soxr) throw Error(Status::Runtime, std::string("libsoxr: ") + (err ? err : "create failed"));
  const auto olen = static_cast<std::size_t>(static_cast<double>(count) * target / rate + 1);
  const auto block = static_cast<std::size_t>(std::max(1000.0, 48000 * rate / target));
  std::vector<float> out(olen, 0.0f);
  std::size_t pos = 0, done = 0;
  for (std::size_t i = 0; i < count; i += block) {
    err = soxr_process(soxr.get(), pcm + i, std::min(block, count - i), nullptr, out.data() + pos, olen - pos, &done);
    if (err != nullptr) throw Error(Status::Runtime, std::string("libsoxr: ") + err);
    pos += done;
  }
  err = soxr_process(soxr.get(), nullptr, 0, nullptr, out.data() + pos, olen - pos, &done);
  if (err != nullptr) throw Error(Status::Runtime, std::string("libsoxr: ") + err);
  out.resize(pos + done);
  return out;
}

std::vector<float> audio_segment(const std::vector<float>& audio, const Spec& spec, bool* padded) {
  const auto start = static_cast<std::size_t>(std::max<int64_t>(spec.pcm_offset(), 0));
  const auto n = static_cast<std::size_t>(spec.pcm_samples());
  std::vector<float> out(n, 0.0f);
  const std::size_t have = start < audio.size() ? std::min(n, audio.size() - start) : 0;
  std::copy_n(audio.begin() + static_cast<std::ptrdiff_t>(std::min(start, audio.size())), have, out.begin());
  if (padded) *padded = have < n;
  return out;
}

}  // namespace cfnsr::media
