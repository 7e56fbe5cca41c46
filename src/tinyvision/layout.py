"""The names of a run folder's files: every module takes them from here, so a reader finds the
whole layout in one place and a rename is one line. `run.folder.RunDir` turns them into paths.

    runs/<name>/
      .tinyvision-run            marker: `overwrite: true` replaces only such a folder
      config.yaml                the resolved settings
      manifest.jsonl             the samples and their splits
      bad_images.txt             images that could not be decoded
      checkpoints/               best.weights.h5, last-* and state.json (resume)
      log.csv                    one row per validation round
      lr_find.png / .csv         the learning-rate sweep, when it ran
      metrics.json               the float model on the evaluation split
      eval_scores.npz            its outputs (the report draws them); int8_scores.npz: int8's
      thresholds.json            multi-label decision thresholds, tuned on val
      export/                    model_float.keras, model_int8.tflite, model_int8.h/.cc, app/,
                                 fit.json, thresholds.json, the other formats' files
      verify.json                the int8 model on TFLM and the device checks
      report.html                the report
      summary.json               the headline figures, written last
    runs/registry.sqlite         one row per run

Bottom layer: imports nothing of tinyvision (and nothing heavy).
"""

RUN_MARKER = ".tinyvision-run"
CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.jsonl"
BAD_IMAGES_FILE = "bad_images.txt"
LEGACY_RUN_FILES = (CONFIG_FILE, MANIFEST_FILE)  # what a run made before the marker holds

CHECKPOINTS_DIR = "checkpoints"
BEST_WEIGHTS_FILE = "best.weights.h5"  # in CHECKPOINTS_DIR: the best epoch of any stage
RESUME_STATE_FILE = "state.json"  # in CHECKPOINTS_DIR: written last, names the last-* files
LOG_FILE = "log.csv"
LR_FIND_PLOT = "lr_find.png"
LR_FIND_TABLE = "lr_find.csv"

METRICS_FILE = "metrics.json"
EVAL_SCORES_FILE = "eval_scores.npz"  # the float model's outputs (evaluate)
INT8_SCORES_FILE = "int8_scores.npz"  # the int8 model's on the reference kernels (verify)
THRESHOLDS_FILE = "thresholds.json"

EXPORT_DIR = "export"
FLOAT_MODEL_FILE = "model_float.keras"
C_HEADER_FILE = "model_int8.h"
C_SOURCE_FILE = "model_int8.cc"
APP_DIR = "app"  # in EXPORT_DIR: the generated TFLM application
FIT_FILE = "fit.json"  # in EXPORT_DIR: the board fit
FORMAT_FILES = {"int8": "model_int8.tflite", "float16": "model_float16.tflite",
                "onnx": "model.onnx", "onnx_int8": "model_int8.onnx", "coreml": "model.mlpackage"}
PTQ_FILE = "model_int8_ptq.tflite"  # with quantisation-aware fine-tuning: both int8 models
QAT_FILE = "model_int8_qat.tflite"

VERIFY_FILE = "verify.json"
REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.json"
REGISTRY_FILE = "registry.sqlite"  # in the runs folder, beside the runs
WORKERS_DIR = ".workers"  # in the runs folder: multi_worker workers other than the chief
