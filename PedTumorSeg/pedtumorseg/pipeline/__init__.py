"""The stages composed: one resolved run configuration (``Predictor``), one case from files to outputs
(``predict_case``) and a folder of cases (``run_batch``): the path shared by the CLI, Slicer's batch and the web app."""

from pedtumorseg.inputs.prepare import RawOptions
from pedtumorseg.pipeline.batch import BatchSummary, check_shard, run_batch, run_cases, shard
from pedtumorseg.pipeline.case import CaseResult, predict_case
from pedtumorseg.pipeline.predictor import QUALITY_PRESETS, Predictor

__all__ = ["BatchSummary", "CaseResult", "Predictor", "QUALITY_PRESETS", "RawOptions", "check_shard", "predict_case",
           "run_batch", "run_cases", "shard"]
