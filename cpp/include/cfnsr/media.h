/*
 * cfnsr media: the C interface of the optional media component (library cfnsr_media, CMake target cfnsr::media).
 *
 * From a clip file, or from one clip's camera frames and microphone samples, to an emotion, with a media artifact
 * (`cfnsr export --inputs media`: its normalisation and MFCC run inside the model). Decoding is FFmpeg's, resampling
 * libsoxr's (soxr_hq, as librosa), face detection and resizing OpenCV's; each step is the one `cfnsr predict` runs.
 * Errors: a status and cfnsr_last_error(), as in cfnsr.h; a clip that cannot be used is CFNSR_ERROR_MEDIA.
 *
 *   cfnsr_recognizer* r = NULL;
 *   cfnsr_prediction p;
 *   if (cfnsr_recognizer_open("model.media.fp32.pt2", NULL, &r) != CFNSR_OK ||
 *       cfnsr_recognize_file(r, "clip.mp4", NULL, &p) != CFNSR_OK) fprintf(stderr, "%s\n", cfnsr_last_error());
 *   else printf("%s %.3f\n", p.emotion, p.probabilities[p.label_id]);
 *   cfnsr_recognizer_close(r);
 *
 * Frames are 8-bit RGB, `count` frames of `height` rows, each row `stride` bytes (0: width * 3), the frames one
 * after another (frame i at frames + i * height * stride). PCM is mono float32 in [-1, 1] at its own rate.
 */
#ifndef CFNSR_MEDIA_H_
#define CFNSR_MEDIA_H_

#include "cfnsr/cfnsr.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cfnsr_recognizer cfnsr_recognizer;

typedef struct cfnsr_box {
  float left, top, right, bottom; /* pixels */
} cfnsr_box;

typedef struct cfnsr_recognizer_options {
  int device_index;      /* CUDA device for engines and CUDA packages (default 0) */
  int num_threads;       /* CPU threads for CPU packages; 0 keeps the library default */
  const char* cascade;   /* Haar cascade XML; NULL: $CFNSR_HAAR_CASCADE or OpenCV's installed file */
  int allow_center_crop; /* nonzero: classify the frame centre when no face is found (default: refuse) */
} cfnsr_recognizer_options;

/* One prediction. Pointers are owned by the recognizer and valid until its next prediction or close. */
typedef struct cfnsr_prediction {
  int64_t label_id;
  const char* emotion;
  size_t num_classes;
  const float* probabilities; /* num_classes, in label order (cfnsr_recognizer_label) */
  const char* crop;           /* "landmarks", "haar" or "center" */
  const char* crop_note;      /* why given boxes or landmarks were not used; "" when they were */
  int audio_padded;           /* the clip's audio was shorter than the window (zero-padded) */
  size_t num_boxes;
  const cfnsr_box* boxes;     /* the face box of each frame the model saw */
  double decode_ms, detection_ms, crop_ms, resample_ms, model_ms, total_ms;
} cfnsr_prediction;

CFNSR_API cfnsr_recognizer_options cfnsr_recognizer_default_options(void);
/* Open a media artifact (.pt2, or .engine with its sidecar). options may be NULL. */
CFNSR_API cfnsr_status cfnsr_recognizer_open(const char* artifact, const cfnsr_recognizer_options* options,
                                             cfnsr_recognizer** recognizer);
CFNSR_API void cfnsr_recognizer_close(cfnsr_recognizer* recognizer);
/* Label of class i, NULL when out of range. */
CFNSR_API const char* cfnsr_recognizer_label(const cfnsr_recognizer* recognizer, size_t index);

/* A clip file; landmarks: an OpenFace CSV of its face, or NULL to use the detector. */
CFNSR_API cfnsr_status cfnsr_recognize_file(cfnsr_recognizer* recognizer, const char* path, const char* landmarks,
                                            cfnsr_prediction* out);
/* One clip's frames (the artifact's frame count is chosen evenly over them) and its mono PCM at sample_rate;
 * boxes: one per frame, or NULL to use the detector. */
CFNSR_API cfnsr_status cfnsr_recognize_frames(cfnsr_recognizer* recognizer, const uint8_t* frames, size_t count,
                                              int height, int width, size_t stride, const float* pcm,
                                              size_t pcm_count, double sample_rate, const cfnsr_box* boxes,
                                              cfnsr_prediction* out);

/* FFmpeg's own messages on stderr (its process-wide log level): nonzero on (warnings and errors), 0 off. Problems
 * come back as statuses and cfnsr_last_error() either way. */
CFNSR_API void cfnsr_media_ffmpeg_messages(int on);

/* Building blocks, for an application that runs cfnsr_run_media itself. The preprocessing is the model's. */
/* count frame indices evenly spaced over n_frames into out. */
CFNSR_API cfnsr_status cfnsr_media_frame_indices(int64_t n_frames, int count, int64_t* out);
/* Crop each frame to its box and resize to the model's face size: out receives count x S x S x 3 bytes. */
CFNSR_API cfnsr_status cfnsr_media_crop_faces(const cfnsr_model* model, const uint8_t* frames, size_t count,
                                              int height, int width, size_t stride, const cfnsr_box* boxes,
                                              uint8_t* out, size_t out_capacity);
/* Resample mono PCM to the model's rate and cut its window (offset, duration, zero-padded): out receives
 * cfnsr_sample_elements(model, CFNSR_INPUT_AUDIO) floats; *padded (may be NULL) says whether it was padded. */
CFNSR_API cfnsr_status cfnsr_media_prepare_pcm(const cfnsr_model* model, const float* pcm, size_t count,
                                               double sample_rate, float* out, size_t out_capacity, int* padded);

/* Live streams (cfnsr::media::Stream): push frames with their presentation times and PCM chunks with the time of
 * their first sample (any rate); one window every `hop` seconds (the spec's audio duration long, its frames chosen
 * as a clip's are, its audio placed by timestamps), run by a worker thread that calls `callback`, or by
 * cfnsr_stream_poll in the caller's thread when callback is NULL. When the model is slower than the hop, the
 * oldest waiting windows are dropped and counted.
 *
 *   cfnsr_stream* s = NULL;
 *   cfnsr_stream_open("model.media.fp32.pt2", NULL, NULL, NULL, NULL, &s);
 *   cfnsr_stream_push_frames(s, rgb, 1, 480, 640, 0, &t_frame);
 *   cfnsr_stream_push_audio(s, pcm, 1024, t_pcm, 48000.0);
 *   cfnsr_window w; int got;
 *   while (cfnsr_stream_poll(s, &w, &got) == CFNSR_OK && got) printf("%.2f %s\n", w.start_s, w.emotion);
 *   cfnsr_stream_close(s);
 */
typedef struct cfnsr_stream cfnsr_stream;

typedef struct cfnsr_stream_options {
  double hop;         /* seconds between windows (default 0.5) */
  size_t queue;       /* complete windows waiting at most (default 2); the oldest is dropped beyond it */
  double max_latency; /* seconds after its last sample a waiting window is dropped; 0: no limit (default) */
  double wait;        /* seconds of one track waited for when the other stalls (default 1; INFINITY for a file) */
  int block;          /* nonzero: a full queue makes push wait instead of dropping (default 0) */
} cfnsr_stream_options;

/* One window. Pointers are owned by the stream, valid until the next poll (or the callback's return). */
typedef struct cfnsr_window {
  int64_t index;
  double start_s, end_s;      /* stream seconds from the first video frame */
  int64_t label_id;           /* -1 when face_lost */
  const char* emotion;        /* "" when face_lost */
  size_t num_classes;         /* 0 when face_lost */
  const float* probabilities;
  const char* crop;           /* "haar", "center", or "" */
  cfnsr_box face;             /* the face box of the last frame the model saw */
  int face_lost, face_fallback, audio_padded;
  double latency_ms;          /* from the window's last sample to its prediction */
} cfnsr_window;

typedef struct cfnsr_stream_stats {
  int64_t windows, dropped, late, face_lost;
  size_t max_queue;
  double latency_p50_ms, latency_p99_ms, busy_p50_ms, busy_p99_ms;
} cfnsr_stream_stats;

typedef void (*cfnsr_window_callback)(const cfnsr_window* window, void* user);

CFNSR_API cfnsr_stream_options cfnsr_stream_default_options(void);
/* Open a media artifact for a stream (the stream owns its recognizer). Options and callback may be NULL. */
CFNSR_API cfnsr_status cfnsr_stream_open(const char* artifact, const cfnsr_recognizer_options* recognizer_options,
                                         const cfnsr_stream_options* options, cfnsr_window_callback callback,
                                         void* user, cfnsr_stream** stream);
/* count RGB frames laid out as in cfnsr_recognize_frames, timestamps[count] in seconds. */
CFNSR_API cfnsr_status cfnsr_stream_push_frames(cfnsr_stream* stream, const uint8_t* frames, size_t count,
                                                int height, int width, size_t stride, const double* timestamps);
/* Mono PCM at sample_rate; timestamp: seconds of its first sample. */
CFNSR_API cfnsr_status cfnsr_stream_push_audio(cfnsr_stream* stream, const float* pcm, size_t count,
                                               double timestamp, double sample_rate);
/* Without a callback: run the next complete window into *out (*got = 1), or *got = 0 when none is waiting. */
CFNSR_API cfnsr_status cfnsr_stream_poll(cfnsr_stream* stream, cfnsr_window* out, int* got);
/* The stream ended: its last windows complete (then poll them, or the callback gets them before close returns). */
CFNSR_API cfnsr_status cfnsr_stream_end(cfnsr_stream* stream);
CFNSR_API cfnsr_status cfnsr_stream_stats_get(const cfnsr_stream* stream, cfnsr_stream_stats* out);
/* Decode a file or URL into the stream (FFmpeg); paced: at its own rate. Ends the stream when the input ends. */
CFNSR_API cfnsr_status cfnsr_stream_read(cfnsr_stream* stream, const char* url, int paced, double timeout_s);
/* End the stream, wait for the callback's last windows, free it. */
CFNSR_API void cfnsr_stream_close(cfnsr_stream* stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CFNSR_MEDIA_H_ */
