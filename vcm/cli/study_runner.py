"""The study runner moved to :mod:`vcm.studies.runner` (library code); these names stay importable
from here for scripts written against the old location."""
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
