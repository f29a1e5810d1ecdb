/*
 * cfnsr_c_check MODEL: exercises the C interface from C on a valid artifact. Every check prints a line; the exit
 * status is the number of failed checks. It proves the header is plain C and that errors come back as codes and
 * messages, never as a crash: NULL arguments, wrong sizes, batches out of range, short output buffers, a missing
 * file, then a successful run whose probabilities sum to one.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfnsr/cfnsr.h"

static int failures = 0;

static void expect(int ok, const char* what) {
  printf("%s %s\n", ok ? "ok  " : "FAIL", what);
  if (!ok) failures++;
}

static void expect_status(cfnsr_status got, cfnsr_status want, const char* what) {
  char line[512];
  int ok = got == want && (want == CFNSR_OK || strlen(cfnsr_last_error()) > 0);
  snprintf(line, sizeof line, "%s -> %s (want %s): %s", what, cfnsr_status_name(got), cfnsr_status_name(want),
           want == CFNSR_OK ? "" : cfnsr_last_error());
  expect(ok, line);
}

int main(int argc, char** argv) {
  cfnsr_model* model = NULL;
  cfnsr_options options = cfnsr_default_options();
  int64_t dims[8], min_batch = 0, max_batch = 0;
  size_t rank = 0, nv, na, classes, i;
  float *video, *audio, *logits, *probs;
  double sum;

  if (argc != 2) {
    fprintf(stderr, "usage: cfnsr_c_check MODEL\n");
    return 64;
  }
  printf("cfnsr_runtime %s, backends: %s\n", cfnsr_version(), cfnsr_backends());

  expect_status(cfnsr_open(argv[1], NULL, NULL), CFNSR_ERROR_INVALID_ARGUMENT, "open with NULL out pointer");
  expect_status(cfnsr_open(NULL, NULL, &model), CFNSR_ERROR_INVALID_ARGUMENT, "open NULL path");
  expect(model == NULL, "model stays NULL after a failed open");
  expect_status(cfnsr_open("/nonexistent/model.pt2", NULL, &model), CFNSR_ERROR_FILE_NOT_FOUND, "open missing file");
  expect(strstr(cfnsr_last_error(), "/nonexistent/model.pt2") != NULL, "the message names the missing file");
  expect_status(cfnsr_run(NULL, NULL, 0, NULL, 0, 1, NULL, NULL, 0), CFNSR_ERROR_INVALID_ARGUMENT, "run NULL model");
  cfnsr_close(NULL);

  options.num_threads = 2;
  expect_status(cfnsr_open(argv[1], &options, &model), CFNSR_OK, "open the artifact");
  if (model == NULL) return failures + 1;
  printf("backend %s, device %s, precision %s\n", cfnsr_backend(model), cfnsr_device(model), cfnsr_precision(model));

  expect_status(cfnsr_input_shape(model, CFNSR_INPUT_VIDEO, dims, 8, &rank), CFNSR_OK, "video shape");
  expect(rank == 5 && dims[0] == -1 && dims[1] == 3, "video is (N, 3, T, H, W) with a dynamic batch");
  expect_status(cfnsr_input_shape(model, CFNSR_INPUT_AUDIO, dims, 8, &rank), CFNSR_OK, "audio shape");
  expect(rank == 3 && dims[0] == -1, "audio is (N, bins, frames)");
  expect_status(cfnsr_input_shape(model, (cfnsr_input)7, dims, 8, &rank), CFNSR_ERROR_INVALID_ARGUMENT,
                "shape of an unknown input");
  expect_status(cfnsr_batch_range(model, &min_batch, &max_batch), CFNSR_OK, "batch range");
  expect(min_batch == 1 && max_batch >= 2, "batch range starts at 1 and allows batches");
  classes = cfnsr_num_classes(model);
  expect(classes == 8 && strcmp(cfnsr_label(model, 0), "neutral") == 0 && cfnsr_label(model, classes) == NULL,
         "8 RAVDESS labels, neutral first, NULL past the end");
  expect(cfnsr_preprocess_json(model)[0] == '{' && strstr(cfnsr_metadata_json(model), "\"inputs\"") != NULL,
         "preprocessing and metadata come back as JSON");

  nv = cfnsr_sample_elements(model, CFNSR_INPUT_VIDEO);
  na = cfnsr_sample_elements(model, CFNSR_INPUT_AUDIO);
  video = calloc(2 * nv, sizeof(float));
  audio = calloc(2 * na, sizeof(float));
  logits = calloc(2 * classes, sizeof(float));
  probs = calloc(2 * classes, sizeof(float));
  for (i = 0; i < 2 * nv; ++i) video[i] = (float)sin((double)i * 0.001);
  for (i = 0; i < 2 * na; ++i) audio[i] = (float)cos((double)i * 0.01);

  expect_status(cfnsr_run(model, video, 2 * nv - 1, audio, 2 * na, 2, logits, probs, 2 * classes),
                CFNSR_ERROR_INPUT_SIZE, "run with one video float missing");
  expect(strstr(cfnsr_last_error(), "video") != NULL, "the message names the video input");
  expect_status(cfnsr_run(model, video, 2 * nv, audio, 3 * na, 2, logits, probs, 2 * classes),
                CFNSR_ERROR_INPUT_SIZE, "run with too much audio");
  expect_status(cfnsr_run(model, video, 0, audio, 0, 0, logits, probs, 2 * classes), CFNSR_ERROR_INPUT_SIZE,
                "run batch 0");
  expect_status(cfnsr_run(model, video, 2 * nv, audio, 2 * na, max_batch + 1, logits, probs, 2 * classes),
                CFNSR_ERROR_INPUT_SIZE, "run a batch above the maximum");
  expect_status(cfnsr_run(model, video, 2 * nv, audio, 2 * na, 2, logits, probs, classes), CFNSR_ERROR_OUTPUT_SIZE,
                "run with a short output buffer");
  expect_status(cfnsr_run(model, NULL, 2 * nv, audio, 2 * na, 2, logits, probs, 2 * classes),
                CFNSR_ERROR_INVALID_ARGUMENT, "run with NULL video");
  expect_status(cfnsr_run(model, video, 2 * nv, audio, 2 * na, 2, NULL, NULL, 2 * classes),
                CFNSR_ERROR_INVALID_ARGUMENT, "run with no output buffer");

  expect_status(cfnsr_run(model, video, 2 * nv, audio, 2 * na, 2, logits, probs, 2 * classes), CFNSR_OK,
                "run batch 2");
  sum = 0;
  for (i = 0; i < classes; ++i) sum += probs[classes + i];
  expect(fabs(sum - 1.0) < 1e-5, "probabilities of a clip sum to 1");
  expect(isfinite(logits[0]) && logits[0] != 0.0f, "logits are finite and filled");
  /* Probabilities only (logits NULL) gives the same probabilities. */
  {
    float again[64];
    int same = 1;
    expect_status(cfnsr_run(model, video, 2 * nv, audio, 2 * na, 2, NULL, again, 64), CFNSR_OK,
                  "run with probabilities only");
    for (i = 0; i < 2 * classes; ++i) same = same && fabs(again[i] - probs[i]) < 1e-6;
    expect(same, "the same inputs give the same probabilities");
  }

  cfnsr_close(model);
  free(video);
  free(audio);
  free(logits);
  free(probs);
  printf("%d failed\n", failures);
  return failures;
}
