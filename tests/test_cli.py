"""What a user sees from the command line: entry points, one-line errors, summaries, warnings."""
from __future__ import annotations

import importlib

from helpers import console_scripts


def test_every_console_script_imports():
    scripts = console_scripts()
    assert {"vcm-train", "vcm-eval", "vcm-rd", "vcm-compress", "vcm-decompress"} <= set(scripts)
    for name, target in scripts.items():
        module, func = target.split(":")
        assert module.startswith("vcm.cli."), f"{name}: entry points live in vcm/cli/"
        assert callable(getattr(importlib.import_module(module), func)), name
