"""The run config: one YAML file per run, validated by pydantic before any work starts.

One module per section (data, model, augment, train, run) and one for reading a config
(loading). Every section forbids unknown keys; an error names the field (`train.batch_size`),
the value received and what is allowed, with close matches for a mistyped key. Each choice is a
`Literal` declared once, and each field says what it does in its `description`.
"""

from tinyvision.config._base import Section, choices
from tinyvision.config.augment import (AUGMENT_MODELS, FILL_MODES, FLIP_MODES,
                                       GEOMETRIC_AUGMENT_OPS, PIXEL_AUGMENT_OPS,
                                       RGB_ONLY_AUGMENT_OPS, AugmentList, AugmentOp,
                                       GeometricAugmentOp)
from tinyvision.config.data import (DEDUPE_MODES, IMAGE_EXTENSIONS, OBJECT_POLICIES,
                                    PROBLEM_POLICIES, RESIZE_MODES, SOURCE_MODES, AnnotationSource,
                                    CocoSource, CsvSource, DataConfig, DataSource, FolderSource,
                                    MergeInput, MergeSource, NegativeOptions, ObjectPolicy,
                                    VocSource)
from tinyvision.config.loading import (apply_override, format_validation_error, load_config,
                                       validate_config)
from tinyvision.config.model import (BACKBONE_DEFAULTS, BACKBONE_NAMES, COLOR_MODES,
                                     MODEL_FILE_SUFFIXES, PLAIN_CNN_POOLS, TASKS, BackboneDefaults,
                                     ModelConfig, PlainCnnConfig)
from tinyvision.config.search import SearchConfig
from tinyvision.config.run import (CameraConfig, DeployConfig, EvaluateConfig, ExportConfig, RunConfig,
                                   VerifyConfig)
from tinyvision.config.train import (BOX_LOSSES, CLASS_WEIGHT_MODES, LOSSES, OPTIMIZERS, SCHEDULES,
                                     STAGES, STRATEGIES, BudgetConfig, FineTuneStage, HeadStage,
                                     LrFindConfig, LrMultipliers, ScheduleConfig, TrainConfig)

__all__ = [
    "AUGMENT_MODELS", "BACKBONE_DEFAULTS", "BACKBONE_NAMES", "BOX_LOSSES", "CLASS_WEIGHT_MODES",
    "COLOR_MODES", "DEDUPE_MODES", "FILL_MODES", "FLIP_MODES", "GEOMETRIC_AUGMENT_OPS",
    "IMAGE_EXTENSIONS", "LOSSES", "MODEL_FILE_SUFFIXES", "OBJECT_POLICIES", "OPTIMIZERS",
    "PIXEL_AUGMENT_OPS", "PLAIN_CNN_POOLS", "PROBLEM_POLICIES", "RESIZE_MODES",
    "RGB_ONLY_AUGMENT_OPS", "SCHEDULES", "SOURCE_MODES", "STAGES", "STRATEGIES", "TASKS",
    "AnnotationSource", "AugmentList", "AugmentOp", "BackboneDefaults", "BudgetConfig",
    "CameraConfig", "CocoSource", "CsvSource", "DataConfig", "DataSource", "DeployConfig",
    "EvaluateConfig", "ExportConfig",
    "FineTuneStage", "FolderSource", "GeometricAugmentOp", "HeadStage", "LrFindConfig",
    "LrMultipliers", "MergeInput", "MergeSource", "ModelConfig", "NegativeOptions", "ObjectPolicy",
    "PlainCnnConfig", "RunConfig", "ScheduleConfig", "SearchConfig", "Section", "TrainConfig",
    "VerifyConfig",
    "VocSource", "apply_override", "choices", "format_validation_error", "load_config",
    "validate_config",
]
