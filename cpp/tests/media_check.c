/*
 * cfnsr_media_check MODEL FRAMES.u8 COUNT HEIGHT WIDTH PCM.f32 RATE: the media C interface from C, on one clip's
 * raw RGB frames (COUNT x HEIGHT x WIDTH x 3 bytes) and mono float PCM at RATE, as a camera application hands them
 * over. Every check prints a line; the last line is the prediction as JSON (for comparison with Python); the exit
 * status is the number of failed checks.
 *
 * Checked: bad arguments (a sample rate of 0, frames of the wrong size, no frames, NULL pcm, boxes out of the
 * frame) come back as codes with messages; a features-style call on a media artifact is refused; the building
 * blocks (frame indices, crops, PCM window, cfnsr_run_media) give the same probabilities as cfnsr_recognize_frames.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfnsr/media.h"

static int failures = 0;

static void expect(int ok, const char* what) {
  printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) failures++;
}

static void expect_status(cfnsr_status got, cfnsr_status want, const char* needle, const char* what) {
  char line[1024];
  int ok = got == want && (want == CFNSR_OK || (strlen(cfnsr_last_error()) > 0 &&
                                                (needle == NULL || strstr(cfnsr_last_error(), needle) != NULL)));
  snprintf(line, sizeof line, "%s -> %s (want %s): %s", what, cfnsr_status_name(got), cfnsr_status_name(want),
           want == CFNSR_OK ? "" : cfnsr_last_error());
  expect(ok, line);
}

static void* slurp(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  void* data;
  long n;
  if (f == NULL) return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  data = malloc((size_t)n + 1);
  *size = fread(data, 1, (size_t)n, f);
  fclose(f);
  return data;
}

int main(int argc, char** argv) {
  cfnsr_recognizer* rec = NULL;
  cfnsr_model* model = NULL;
  cfnsr_recognizer_options options = cfnsr_recognizer_default_options();
  cfnsr_prediction p, again;
  cfnsr_box far_box[1];
  cfnsr_box* first_boxes;
  char first_crop[32];
  size_t n_boxes;
  int64_t first_label;
  size_t frames_size = 0, pcm_size = 0, count, n_pcm, i, frame_px, nv, na, classes;
  int height, width, padded = 0, side;
  double rate, diff = 0;
  unsigned char *frames, *chosen, *crops;
  float *pcm, *window, *probs, *saved;
  int64_t* idx;

  if (argc != 8) {
    fprintf(stderr, "usage: cfnsr_media_check MODEL FRAMES.u8 COUNT HEIGHT WIDTH PCM.f32 RATE\n");
    return 64;
  }
  count = (size_t)atol(argv[3]);
  height = atoi(argv[4]);
  width = atoi(argv[5]);
  rate = atof(argv[7]);
  frames = (unsigned char*)slurp(argv[2], &frames_size);
  pcm = (float*)slurp(argv[6], &pcm_size);
  n_pcm = pcm_size / sizeof(float);
  frame_px = (size_t)height * (size_t)width * 3;
  if (frames == NULL || pcm == NULL || frames_size != count * frame_px) {
    fprintf(stderr, "cfnsr_media_check: cannot read the frames or PCM (or their size is not COUNT x H x W x 3)\n");
    return 64;
  }

  expect_status(cfnsr_recognizer_open(argv[1], NULL, NULL), CFNSR_ERROR_INVALID_ARGUMENT, NULL, "open NULL out");
  expect_status(cfnsr_recognizer_open("/nonexistent/m.pt2", NULL, &rec), CFNSR_ERROR_FILE_NOT_FOUND, "m.pt2",
                "open missing file");
  expect(rec == NULL, "recognizer stays NULL after a failed open");
  expect_status(cfnsr_recognizer_open(argv[1], &options, &rec), CFNSR_OK, NULL, "open the media artifact");
  if (rec == NULL) return failures;

  expect_status(cfnsr_recognize_frames(rec, frames, count, height, width, 0, pcm, n_pcm, 0.0, NULL, &p),
                CFNSR_ERROR_INVALID_ARGUMENT, "sample_rate", "a sample rate of 0");
  expect_status(cfnsr_recognize_frames(rec, frames, count, 0, width, 0, pcm, n_pcm, rate, NULL, &p),
                CFNSR_ERROR_INVALID_ARGUMENT, "positive size", "frames of height 0");
  expect_status(cfnsr_recognize_frames(rec, frames, count, height, width, (size_t)width, pcm, n_pcm, rate, NULL, &p),
                CFNSR_ERROR_INVALID_ARGUMENT, "stride", "a row stride shorter than width x 3");
  expect_status(cfnsr_recognize_frames(rec, frames, 0, height, width, 0, pcm, n_pcm, rate, NULL, &p),
                CFNSR_ERROR_INVALID_ARGUMENT, "got none", "no frames");
  expect_status(cfnsr_recognize_frames(rec, frames, count, height, width, 0, NULL, 0, rate, NULL, &p),
                CFNSR_ERROR_INVALID_ARGUMENT, "pcm", "NULL pcm");
  expect_status(cfnsr_media_frame_indices(0, 30, NULL), CFNSR_ERROR_INVALID_ARGUMENT, NULL, "indices into NULL");

  /* The whole clip: the detector finds the face. */
  expect_status(cfnsr_recognize_frames(rec, frames, count, height, width, 0, pcm, n_pcm, rate, NULL, &p), CFNSR_OK,
                NULL, "recognize the clip's frames and PCM");
  if (p.emotion == NULL) return failures + 1;
  expect(p.num_classes == 8 && strcmp(cfnsr_recognizer_label(rec, (size_t)p.label_id), p.emotion) == 0,
         "8 classes, the label of label_id is the emotion");
  expect(p.total_ms >= p.model_ms && p.model_ms > 0, "timings: total >= model > 0");
  /* p's pointers live until the next prediction: keep what is used after it. */
  saved = (float*)malloc(p.num_classes * sizeof(float));
  memcpy(saved, p.probabilities, p.num_classes * sizeof(float));
  n_boxes = p.num_boxes;
  first_boxes = (cfnsr_box*)malloc(n_boxes * sizeof(cfnsr_box));
  memcpy(first_boxes, p.boxes, n_boxes * sizeof(cfnsr_box));
  snprintf(first_crop, sizeof first_crop, "%s", p.crop);
  first_label = p.label_id;

  /* The same frames with a row stride wider than the pixels (a camera's padded rows). */
  {
    size_t stride = (size_t)width * 3 + 64, r;
    unsigned char* padded_frames = (unsigned char*)calloc(count * (size_t)height * stride, 1);
    for (i = 0; i < count; ++i)
      for (r = 0; r < (size_t)height; ++r)
        memcpy(padded_frames + (i * (size_t)height + r) * stride, frames + i * frame_px + r * (size_t)width * 3,
               (size_t)width * 3);
    expect_status(cfnsr_recognize_frames(rec, padded_frames, count, height, width, stride, pcm, n_pcm, rate, NULL,
                                         &again),
                  CFNSR_OK, NULL, "recognize frames with padded rows");
    for (i = 0; i < again.num_classes; ++i) diff = fmax(diff, fabs(again.probabilities[i] - saved[i]));
    expect(diff == 0.0, "padded rows give the same probabilities");
    free(padded_frames);
  }

  /* Boxes given but impossible: refused with a note, the detector used instead. */
  {
    cfnsr_box* boxes = (cfnsr_box*)malloc(count * sizeof(cfnsr_box));
    for (i = 0; i < count; ++i) {
      far_box[0].left = (float)width * 3;
      far_box[0].top = 0;
      far_box[0].right = (float)width * 4;
      far_box[0].bottom = 50;
      boxes[i] = far_box[0];
    }
    expect_status(cfnsr_recognize_frames(rec, frames, count, height, width, 0, pcm, n_pcm, rate, boxes, &again),
                  CFNSR_OK, NULL, "boxes outside the frame");
    expect(strcmp(again.crop, "haar") == 0 && strstr(again.crop_note, "outside") != NULL,
           "impossible boxes: a note, and the detector's boxes");
    free(boxes);
  }

  /* Building blocks with the model itself: indices, crops of the recognizer's boxes, the PCM window, run_media. */
  expect_status(cfnsr_open(argv[1], NULL, &model), CFNSR_OK, NULL, "open the artifact as a model");
  expect(strcmp(cfnsr_input_kind(model), "media") == 0 && strcmp(cfnsr_input_dtype(model, CFNSR_INPUT_VIDEO), "uint8")
         == 0, "input kind media, frames uint8");
  nv = cfnsr_sample_elements(model, CFNSR_INPUT_VIDEO);
  na = cfnsr_sample_elements(model, CFNSR_INPUT_AUDIO);
  classes = cfnsr_num_classes(model);
  side = (int)sqrt((double)(nv / n_boxes / 3));
  idx = (int64_t*)malloc(n_boxes * sizeof(int64_t));
  chosen = (unsigned char*)malloc(n_boxes * frame_px);
  crops = (unsigned char*)malloc(nv);
  window = (float*)malloc(na * sizeof(float));
  probs = (float*)malloc(classes * sizeof(float));
  expect_status(cfnsr_media_frame_indices((int64_t)count, (int)n_boxes, idx), CFNSR_OK, NULL, "frame indices");
  for (i = 0; i < n_boxes; ++i) memcpy(chosen + i * frame_px, frames + (size_t)idx[i] * frame_px, frame_px);
  expect_status(cfnsr_media_crop_faces(model, chosen, n_boxes, height, width, 0, first_boxes, crops, nv - 1),
                CFNSR_ERROR_OUTPUT_SIZE, "bytes", "crops into a short buffer");
  expect_status(cfnsr_media_crop_faces(model, chosen, n_boxes, height, width, 0, first_boxes, crops, nv), CFNSR_OK,
                NULL, "crop the faces");
  expect_status(cfnsr_media_prepare_pcm(model, pcm, n_pcm, 0.0, window, na, &padded), CFNSR_ERROR_INVALID_ARGUMENT,
                "sample rate", "PCM at 0 Hz");
  expect_status(cfnsr_media_prepare_pcm(model, pcm, n_pcm, rate, window, na, &padded), CFNSR_OK, NULL,
                "resample and cut the PCM");
  expect_status(cfnsr_run(model, (const float*)crops, nv / 4, window, na, 1, NULL, probs, classes),
                CFNSR_ERROR_INVALID_ARGUMENT, "media artifact", "float features into a media artifact");
  expect_status(cfnsr_run_media(model, crops, nv - 3, window, na, 1, NULL, probs, classes), CFNSR_ERROR_INPUT_SIZE,
                "frames", "frames of the wrong size");
  expect_status(cfnsr_run_media(model, crops, nv, window, na, 1, NULL, probs, classes), CFNSR_OK, NULL,
                "cfnsr_run_media");
  diff = 0;
  for (i = 0; i < classes; ++i) diff = fmax(diff, fabs(probs[i] - saved[i]));
  {
    char line[128];
    snprintf(line, sizeof line, "building blocks = cfnsr_recognize_frames (max |dp| %.3g, side %d)", diff, side);
    expect(diff < 1e-6, line);
  }

  /* The prediction of the whole clip, for the caller to compare. */
  printf("{\"emotion\": \"%s\", \"label_id\": %lld, \"crop\": \"%s\", \"audio_padded\": %s, \"probabilities\": [",
         cfnsr_recognizer_label(rec, (size_t)first_label), (long long)first_label, first_crop,
         padded ? "true" : "false");
  for (i = 0; i < classes; ++i) printf("%s%.9g", i ? ", " : "", saved[i]);
  printf("]}\n");
  printf("%d failed\n", failures);
  cfnsr_close(model);
  cfnsr_recognizer_close(rec);
  free(frames), free(pcm), free(idx), free(chosen), free(crops), free(window), free(probs), free(saved), free(first_boxes);
  return failures;
}
