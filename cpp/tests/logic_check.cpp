// cfnsr_logic_check: the runtime's and the media component's logic that needs no artifact and no Python, run by
// CTest (`ctest --test-dir BUILD`). Every check prints a line; the exit status is the number of failed checks.
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "cfnsr/runtime.hpp"
#ifdef CFNSR_CHECK_MEDIA
#include "cfnsr/media.hpp"
#endif

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

template <typename F>
cfnsr::Status status_of(F&& f) {
  try {
    f();
  } catch (const cfnsr::Error& e) {
    return e.status();
  }
  return cfnsr::Status::Ok;
}

void softmax_checks() {
  const std::vector<float> logits = {1.f, 2.f, 3.f, 1000.f, 1000.f, -1000.f};  // row 2: no overflow at +-1000
  std::vector<float> p(logits.size());
  cfnsr::softmax(logits.data(), 2, 3, p.data());
  expect(std::fabs(p[0] + p[1] + p[2] - 1.f) < 1e-6f && p[2] > p[1] && p[1] > p[0], "softmax: a row sums to 1, in order");
  expect(std::fabs(p[3] - 0.5f) < 1e-6f && std::fabs(p[4] - 0.5f) < 1e-6f && p[5] == 0.f,
         "softmax: large logits neither overflow nor lose the ties");
}

void open_checks() {
  expect(status_of([] { cfnsr::Model::open("/nonexistent/model.pt2"); }) == cfnsr::Status::FileNotFound,
         "Model::open of a missing file: FileNotFound");
  expect(!cfnsr::version().empty(), "version() says the library's version");
}

#ifdef CFNSR_CHECK_MEDIA
void media_checks() {
  namespace m = cfnsr::media;
  const auto idx = m::frame_indices(100, 30);
  bool msaf = idx.size() == 30;
  for (int i = 0; msaf && i < 30; ++i) msaf = idx[i] == (static_cast<int64_t>(i) * 100) / 30;
  expect(msaf, "frame_indices: MSAF's i * n / count");
  const auto few = m::frame_indices(5, 8);
  expect(few.back() == 4 && few.front() == 0, "frame_indices: a short clip repeats frames, never past its end");
  expect(status_of([] { m::frame_indices(0, 8); }) != cfnsr::Status::Ok, "frame_indices: no frames is an error");

  const auto boxes = m::center_boxes(2, 100, 200);
  expect(boxes.size() == 2 && boxes[0].left == 50 && boxes[0].right == 150 && boxes[0].bottom == 100,
         "center_boxes: the centred square");
  expect(m::box_problem(boxes, 100, 200).empty(), "box_problem: a centred box is a face box");
  expect(!m::box_problem({{0, 0, 4, 4}}, 100, 200).empty(), "box_problem: a 4-pixel box is not");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  expect(!m::box_problem({{nan, 0, 50, 50}}, 100, 200).empty(), "box_problem: a non-finite box is not");

  m::Spec spec;
  spec.sample_rate = 100;
  spec.audio_offset = 0.5;
  spec.audio_duration = 2.0;
  std::vector<float> audio(120, 1.f);
  bool padded = false;
  const auto window = m::audio_segment(audio, spec, &padded);
  expect(window.size() == 200 && padded && window[69] == 1.f && window[70] == 0.f,
         "audio_segment: offset, duration, zero-padded at the end");
  const auto same = m::resample(audio.data(), audio.size(), 100, 100);
  expect(same == audio, "resample: the same rate is the identity");
}
#endif

}  // namespace

int main() {
  softmax_checks();
  open_checks();
#ifdef CFNSR_CHECK_MEDIA
  media_checks();
#endif
  std::printf("%d failed\n", failures);
  return failures;
}
