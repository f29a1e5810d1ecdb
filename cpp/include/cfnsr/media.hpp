// cfnsr::media: from a video file, or from camera frames and microphone samples, to a media artifact's inputs and
// an emotion. The optional component of cfnsr_runtime (CMake CFNSR_WITH_MEDIA; target cfnsr::media), built on
// FFmpeg (decoding), libsoxr (resampling, as Python's librosa.resample does) and OpenCV (Haar face detector, resize).
// It follows cfnsr.data.features step by step, so its inputs are the ones `cfnsr predict` gives the model.
//
//   cfnsr::media::Recognizer rec("model.media.fp32.pt2");             // `cfnsr export --inputs media`
//   cfnsr::media::Prediction p = rec.predict_file("clip.mp4");         // decode, find the face, crop, resample, run
//   std::cout << p.emotion << " " << p.probabilities[p.label_id] << "\n";
//
//   // Camera + microphone: the application owns capture; hand over one clip's frames and samples.
//   std::vector<cfnsr::media::Image> frames = ...;                    // RGB, any size, e.g. 90 frames of 3 s
//   p = rec.predict(frames, pcm.data(), pcm.size(), 48000);            // mono float samples at their own rate
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cfnsr/runtime.hpp"

namespace cfnsr::media {

// The preprocessing a media artifact records (its cfnsr.preprocess metadata, cfnsr.data.spec.PreprocessSpec).
struct Spec {
  int frames = 30;              // frames per clip, evenly spaced over it
  int image_size = 224;         // face crop side, pixels
  int sample_rate = 44100;      // PCM rate the artifact takes
  double audio_offset = 0.5;    // seconds into the clip where its audio window starts
  double audio_duration = 2.45; // seconds of audio (zero-padded when the clip is shorter)
  bool msaf_compat = false;     // crop from the frame squashed to image_size first (MSAF's preprocessing)

  // The spec of an opened media artifact; Error(InvalidArtifact) when it records none or it disagrees with the
  // artifact's input shapes, Error(InvalidArgument) for a features artifact.
  static Spec from_model(const ModelInfo& info);
  int64_t pcm_offset() const;   // round(audio_offset * sample_rate), half to even as Python's round()
  int64_t pcm_samples() const;  // round(audio_duration * sample_rate)
};

// A face box in pixels: left, top, right, bottom.
struct Box {
  float left = 0, top = 0, right = 0, bottom = 0;
};

// One RGB frame, 8 bits per channel, rows `stride` bytes apart (0: width * 3). Not owned.
struct Image {
  const uint8_t* data = nullptr;
  int height = 0;
  int width = 0;
  std::size_t stride = 0;
};

// ------------------------------------------------------------------------------------------------ building blocks
// `count` indices evenly spaced over n_frames: min(i * n_frames / count, n_frames - 1).
CFNSR_API std::vector<int64_t> frame_indices(int64_t n_frames, int count);

// Why boxes cannot be faces in a height x width frame ("" when they can): non-finite, under 8 pixels, or outside
// the frame by more than 10% of its size.
CFNSR_API std::string box_problem(const std::vector<Box>& boxes, int height, int width);

// The centred square of each frame.
CFNSR_API std::vector<Box> center_boxes(int count, int height, int width);

// OpenFace 2D landmarks: rows x 68 x (x, y) pixels; rows where OpenFace lost the face are NaN.
struct Landmarks {
  int64_t rows = 0;
  std::vector<float> xy;
};
// Read an OpenFace CSV (columns x_0..x_67, y_0..y_67, optional success). Error(FileNotFound | Media).
CFNSR_API Landmarks read_landmarks(const std::string& path);
// The boxes of the landmark rows matching frame_idx (rows map proportionally when the CSV and the video disagree
// on the count; a lost row borrows the nearest tracked one).
CFNSR_API std::vector<Box> landmark_boxes(const Landmarks& landmarks, const std::vector<int64_t>& frame_idx,
                                          int64_t n_frames);

// OpenCV's Haar frontal-face cascade, with the parameters Python uses.
class CFNSR_API FaceDetector {
 public:
  // cascade: the XML file; "" uses default_cascade(). Error(FileNotFound) when it cannot be loaded.
  explicit FaceDetector(const std::string& cascade = "");
  ~FaceDetector();
  FaceDetector(const FaceDetector&) = delete;
  FaceDetector& operator=(const FaceDetector&) = delete;
  // The largest face of each frame; frames without one take the median box of the others. Empty when no frame
  // has a face.
  std::vector<Box> detect(const std::vector<Image>& frames);
  const std::string& cascade() const noexcept;
  // $CFNSR_HAAR_CASCADE, else haarcascade_frontalface_default.xml of the OpenCV this was built with (the file the
  // Python wheels bundle).
  static std::string default_cascade();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Crop each frame to its box and resize to spec.image_size (bilinear), as cfnsr.data.features.crop_faces does.
// out receives frames.size() x image_size x image_size x 3 bytes. Error(InvalidArgument) for bad frames or boxes.
CFNSR_API void crop_faces(const std::vector<Image>& frames, const std::vector<Box>& boxes, const Spec& spec,
                          uint8_t* out);

// Mono samples from `rate` to `target` Hz with libsoxr at soxr_hq (librosa.resample's default); a copy when the
// rates are equal. Error(InvalidArgument) for a rate <= 0.
CFNSR_API std::vector<float> resample(const float* pcm, std::size_t count, double rate, double target);
// The spec's window of audio at spec.sample_rate (offset, duration; zero-padded at the end). padded may be null.
CFNSR_API std::vector<float> audio_segment(const std::vector<float>& audio, const Spec& spec, bool* padded);

// ------------------------------------------------------------------------------------------------ decoding (FFmpeg)
struct Video {
  int count = 0, height = 0, width = 0;
  int64_t total_frames = 0;  // decodable frames in the file
  std::vector<uint8_t> rgb;  // count x height x width x 3
  std::vector<Image> images() const;
};
// `count` frames evenly spaced over the first video track, RGB. Error(Media) for a file that is missing, corrupt,
// or has no video.
CFNSR_API Video decode_video(const std::string& path, int count);

struct Audio {
  std::vector<float> samples;  // mono (channels averaged), float in [-1, 1]
  int sample_rate = 0;
};
// The first audio track at its own rate. Error(Media) for a file without audio.
CFNSR_API Audio decode_audio(const std::string& path);

// FFmpeg's own messages on stderr (its global log level, shared with the rest of the process): on (warnings and
// errors, FFmpeg's default is more) or off. cfnsr never changes it by itself; the problems it meets come back as
// Error messages either way. cfnsr_predict turns them off unless --ffmpeg-log.
CFNSR_API void ffmpeg_messages(bool on);

// ------------------------------------------------------------------------------------------------ the recogniser
struct Prediction {
  std::string emotion;
  int64_t label_id = -1;
  std::vector<std::string> labels;
  std::vector<float> probabilities;  // per label
  std::string crop;                  // "landmarks", "haar" or "center"
  std::string crop_note;             // why given boxes or landmarks were not used ("" when they were)
  bool audio_padded = false;
  std::vector<Box> boxes;            // the face box of each of the spec's frames
  // Milliseconds per stage, in order: decode, detection, crop, resample, model, total.
  std::vector<std::pair<std::string, double>> timings_ms;
  double timing(const std::string& stage) const;
};

struct RecognizerOptions {
  Options model;                   // device, threads
  std::string cascade;             // Haar cascade file ("" : FaceDetector::default_cascade())
  bool allow_center_crop = false;  // classify the frame centre when no face is found (refused by default)
};

// Not thread-safe (its detector and buffers are per instance): one Recognizer per thread.
class CFNSR_API Recognizer {
 public:
  // Open a media artifact (.pt2 or .engine from `cfnsr export --inputs media`). Throws Error.
  explicit Recognizer(const std::string& artifact, const RecognizerOptions& options = RecognizerOptions());
  ~Recognizer();
  Recognizer(const Recognizer&) = delete;
  Recognizer& operator=(const Recognizer&) = delete;

  // A clip file: decode, boxes from the landmark CSV when given (else the detector), crop, resample, run.
  Prediction predict_file(const std::string& path, const std::string& landmarks = "");
  // One clip's full frames (the spec's count is chosen evenly over them), its mono audio at sample_rate, and
  // optionally one face box per frame (else the detector finds the face).
  Prediction predict(const std::vector<Image>& frames, const float* pcm, std::size_t pcm_count, double sample_rate,
                     const std::vector<Box>* boxes = nullptr);

  // One window of a stream (Stream): the spec's frames, already chosen, and the window's mono audio at sample_rate,
  // used whole (no audio offset: the window is what the model hears). No face (without allow_center_crop) is not
  // an error here: a Prediction with label_id -1 and crop "" (the stream records the window as face_lost).
  Prediction predict_window(const std::vector<Image>& frames, const float* pcm, std::size_t pcm_count,
                            double sample_rate);

  const Spec& spec() const noexcept;
  Model& model() noexcept;
  // The model's inputs of the last prediction: uint8 crops (T, S, S, 3) and PCM (L), as `cfnsr predict
  // --save-inputs` writes them.
  const std::vector<uint8_t>& last_frames() const noexcept;
  const std::vector<float>& last_pcm() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ------------------------------------------------------------------------------------------------ live streams
// cfnsr.engines.stream in C++, the same window rule and drop policy: window k starts k * hop seconds after the
// first video frame and lasts spec.audio_duration; its frames are the spec's count chosen (frame_indices) among
// those whose timestamp lies in [start, start + duration); its audio the samples of that interval placed by their
// timestamps (a gap is zeros and marks the window padded), resampled to the spec's rate and used whole. A window is
// complete when a frame at or after its end arrived and the audio reaches its end (or `wait` seconds of one track
// after the other stalled). Complete windows wait in a queue of `queue`; when it is full the oldest is dropped.
//
//   cfnsr::media::Stream stream(rec, {}, [](const cfnsr::media::Window& w) { ... });   // a worker runs windows
//   stream.push_frame(image, t);                      // RGB frame, presentation time in seconds (capture thread)
//   stream.push_audio(pcm, n, t, 48000);              // mono samples at any rate, time of the first one
//   ... or without a callback: for (auto& w : stream.poll()) ...   (windows run in the caller's thread)
struct StreamOptions {
  double hop = 0.5;                                    // seconds between windows
  std::size_t queue = 2;                               // complete windows waiting at most
  double max_latency = 0;                              // s after its last sample a waiting window is dropped; 0: off
  double wait = 1.0;                                   // s of one track a stalled other is waited for (inf: a file)
  bool block = false;                                  // a full queue makes push wait instead of dropping
};

struct Window {
  int64_t index = 0;
  double start = 0, end = 0;                           // stream seconds from the first video frame
  std::string emotion;                                 // "" when face_lost
  int64_t label_id = -1;
  std::vector<float> probabilities;                    // per label (empty when face_lost)
  std::string crop;                                    // "haar", "center", or "" when face_lost
  Box face;                                            // the face box of the last frame the model saw
  bool face_lost = false, face_fallback = false, audio_padded = false;
  double latency_ms = 0;                               // from the window's last sample to its prediction
  double face_ms = 0, crop_ms = 0, model_ms = 0;       // model: resample + the model
};

struct StreamStats {
  int64_t windows = 0, dropped = 0, late = 0, face_lost = 0;
  std::size_t max_queue = 0;
  double latency_p50_ms = 0, latency_p99_ms = 0, busy_p50_ms = 0, busy_p99_ms = 0;  // busy: one window's work
};

class CFNSR_API Stream {
 public:
  // recognizer must outlive the stream and is used by it only (its worker thread, or poll()'s caller).
  explicit Stream(Recognizer& recognizer, const StreamOptions& options = StreamOptions(),
                  std::function<void(const Window&)> callback = nullptr);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Frames and samples are copied. Error(InvalidArgument) for a bad frame or chunk.
  void push_frame(const Image& frame, double timestamp);
  void push_audio(const float* pcm, std::size_t count, double timestamp, double sample_rate);
  void end();                        // the stream ended: complete the last windows
  std::vector<Window> poll();        // without a callback: run the complete windows now, in order
  void close();                      // end(), then wait for the worker to run what is queued
  StreamStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Decode a file or a network URL with FFmpeg into a stream: its first video and audio tracks, each frame with its
// presentation time; `paced`: no sooner than the timestamps say (a file at its own rate). Returns when the input
// ends; Error(Media) naming the input and FFmpeg's reason when it cannot be opened or has no audio.
CFNSR_API void read_into(const std::string& url, Stream& stream, bool paced, double timeout_s = 5.0);

}  // namespace cfnsr::media
