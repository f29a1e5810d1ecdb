/*
 * cfnsr runtime: the C interface.
 *
 * Plain C (C89 types plus stdint), for FFI from C, Python ctypes, Rust, Go, C#. Every function returns a status
 * code or a value documented below; no C++ exception ever crosses this boundary. After a call that returns
 * anything but CFNSR_OK, cfnsr_last_error() gives a message naming what was wrong and what was expected.
 *
 * Typical use:
 *
 *   cfnsr_model* m = NULL;
 *   if (cfnsr_open("model.fp32.pt2", NULL, &m) != CFNSR_OK) { fprintf(stderr, "%s\n", cfnsr_last_error()); ... }
 *   size_t nv = cfnsr_sample_elements(m, CFNSR_INPUT_VIDEO);   // floats per clip, e.g. 3*30*224*224
 *   size_t na = cfnsr_sample_elements(m, CFNSR_INPUT_AUDIO);   // e.g. 13*212
 *   float probs[8 * 4];
 *   cfnsr_run(m, video, 4 * nv, audio, 4 * na, 4, NULL, probs, 8 * 4);
 *   cfnsr_close(m);
 *
 * Inputs are C-contiguous buffers, batch first, of one of two kinds (cfnsr_input_kind):
 *   "features" (cfnsr export, the default): float32 video (N, 3, T, H, W) face crops normalised as the artifact's
 *              preprocessing says (cfnsr_preprocess_json), float32 audio (N, MFCC bins, MFCC frames); cfnsr_run.
 *   "media"    (cfnsr export --inputs media, normalisation and MFCC in the graph): uint8 RGB face crops
 *              (N, T, H, W, 3) and float32 mono PCM (N, samples) at the preprocessing's rate; cfnsr_run_media.
 *              cfnsr/media.h prepares both from a file, or from camera frames and microphone samples.
 *
 * Thread safety: cfnsr_run on one model is serialised internally; open one model per thread for parallel work.
 */
#ifndef CFNSR_CFNSR_H_
#define CFNSR_CFNSR_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(CFNSR_BUILDING_LIBRARY)
#    define CFNSR_API __declspec(dllexport)
#  else
#    define CFNSR_API __declspec(dllimport)
#  endif
#else
#  define CFNSR_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cfnsr_status {
  CFNSR_OK = 0,
  CFNSR_ERROR_INVALID_ARGUMENT = 1,    /* a NULL pointer, an index out of range, an unknown option */
  CFNSR_ERROR_FILE_NOT_FOUND = 2,      /* the artifact (or an engine's sidecar JSON) does not exist */
  CFNSR_ERROR_INVALID_ARTIFACT = 3,    /* not a cfnsr artifact, corrupt or truncated, metadata missing */
  CFNSR_ERROR_VERSION_MISMATCH = 4,    /* built for another TensorRT, GPU, CPU instruction set or metadata schema */
  CFNSR_ERROR_BACKEND_UNAVAILABLE = 5, /* this build has no backend for the artifact, or its device is absent */
  CFNSR_ERROR_INPUT_SIZE = 6,          /* input element count or batch does not match the artifact */
  CFNSR_ERROR_OUTPUT_SIZE = 7,         /* an output buffer is smaller than batch x classes */
  CFNSR_ERROR_RUNTIME = 8,             /* the backend failed while running */
  CFNSR_ERROR_INTERNAL = 9,            /* a bug: please report it with the message */
  CFNSR_ERROR_MEDIA = 10               /* cfnsr/media.h: a clip without video or audio, corrupt or undecodable, a bad
                                          landmark file, or no face found (unless centre crops are allowed) */
} cfnsr_status;

typedef enum cfnsr_input { CFNSR_INPUT_VIDEO = 0, CFNSR_INPUT_AUDIO = 1 } cfnsr_input;

typedef struct cfnsr_model cfnsr_model;

typedef struct cfnsr_options {
  int device_index; /* CUDA device for engines and CUDA packages (default 0) */
  int num_threads;  /* CPU threads for CPU packages; 0 keeps the library default */
} cfnsr_options;

/* Library version, e.g. "0.1.0". */
CFNSR_API const char* cfnsr_version(void);
/* Backends compiled into this library, comma-separated, e.g. "aoti,tensorrt". */
CFNSR_API const char* cfnsr_backends(void);
/* Name of a status code, e.g. "CFNSR_ERROR_INPUT_SIZE". */
CFNSR_API const char* cfnsr_status_name(cfnsr_status status);
/* Message of the last failed call on this thread ("" if none); valid until the next failing call here. */
CFNSR_API const char* cfnsr_last_error(void);

/* Defaults for cfnsr_options (device 0, library thread count). */
CFNSR_API cfnsr_options cfnsr_default_options(void);
/* Open an artifact: *.pt2 (AOTInductor package, libtorch backend) or *.engine / *.plan (TensorRT, with the
 * sidecar MODEL.engine.json written by `cfnsr build`). options may be NULL. On failure *model is set to NULL. */
CFNSR_API cfnsr_status cfnsr_open(const char* path, const cfnsr_options* options, cfnsr_model** model);
/* Free a model; NULL is allowed. */
CFNSR_API void cfnsr_close(cfnsr_model* model);

/* "aoti" or "tensorrt"; "cpu" or "cuda" for the device. NULL for a NULL model. */
CFNSR_API const char* cfnsr_backend(const cfnsr_model* model);
CFNSR_API const char* cfnsr_device(const cfnsr_model* model);
/* "fp32", "fp16" or "int8", as recorded in the artifact. */
CFNSR_API const char* cfnsr_precision(const cfnsr_model* model);
/* Shape of an input with the batch axis as -1: *rank is always set; dims is filled up to capacity. */
CFNSR_API cfnsr_status cfnsr_input_shape(const cfnsr_model* model, cfnsr_input input, int64_t* dims, size_t capacity,
                                         size_t* rank);
/* "features" or "media" (see above); NULL for a NULL model. */
CFNSR_API const char* cfnsr_input_kind(const cfnsr_model* model);
/* Element type of an input: "float32", or "uint8" for a media artifact's frames; NULL for a NULL model. */
CFNSR_API const char* cfnsr_input_dtype(const cfnsr_model* model, cfnsr_input input);
/* Elements per clip of an input (the product of its non-batch dimensions); 0 for a NULL model. */
CFNSR_API size_t cfnsr_sample_elements(const cfnsr_model* model, cfnsr_input input);
/* The batch sizes the artifact accepts. */
CFNSR_API cfnsr_status cfnsr_batch_range(const cfnsr_model* model, int64_t* min_batch, int64_t* max_batch);
/* Number of classes (8 for RAVDESS) and the label of class i ("neutral", ...; NULL when out of range). */
CFNSR_API size_t cfnsr_num_classes(const cfnsr_model* model);
CFNSR_API const char* cfnsr_label(const cfnsr_model* model, size_t index);
/* The preprocessing the inputs must follow, and all cfnsr metadata, as JSON text owned by the model. */
CFNSR_API const char* cfnsr_preprocess_json(const cfnsr_model* model);
CFNSR_API const char* cfnsr_metadata_json(const cfnsr_model* model);

/* Run a batch of a features artifact. video holds batch * cfnsr_sample_elements(VIDEO) floats, audio batch * ...(AUDIO). logits and
 * probabilities (softmax over classes) each receive batch * classes floats, row-major; either may be NULL, and
 * output_capacity is the size in floats of each non-NULL one. */
CFNSR_API cfnsr_status cfnsr_run(cfnsr_model* model, const float* video, size_t video_count, const float* audio,
                                 size_t audio_count, int64_t batch, float* logits, float* probabilities,
                                 size_t output_capacity);
/* Run a batch of a media artifact: frames holds batch * cfnsr_sample_elements(VIDEO) bytes (uint8 RGB face crops,
 * N x T x H x W x 3), pcm batch * cfnsr_sample_elements(AUDIO) floats. Outputs as for cfnsr_run. */
CFNSR_API cfnsr_status cfnsr_run_media(cfnsr_model* model, const uint8_t* frames, size_t frames_count,
                                       const float* pcm, size_t pcm_count, int64_t batch, float* logits,
                                       float* probabilities, size_t output_capacity);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CFNSR_CFNSR_H_ */
