"""RD studies: study presets (``vcm/conf/study``) and the runner that trains, evaluates and reports
their points, one ``vcm-train`` / ``vcm-eval`` / ``vcm-rd`` process per step. The commands that run
studies (``vcm.cli.study``, ``vcm.cli.bench_roi``, ...) build on it."""
from vcm.studies.runner import (
    EVAL,
    TRAIN,
    Study,
    load_study,
    overrides,
    point_name,
    read_json,
    study_names,
)

__all__ = ["EVAL", "TRAIN", "Study", "load_study", "overrides", "point_name", "read_json", "study_names"]
