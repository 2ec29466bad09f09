"""Progress bars with an estimate of the time left, for long loops of a command (tqdm, on stderr).

One knob, ``progress``: ``auto`` (the default) shows a bar only when stderr is a terminal, so logs,
pipes, CI and the study runner's log files get plain lines; ``true`` always shows it, ``false``
never does.
"""
from __future__ import annotations

import sys
from typing import IO

from vcm.errors import ConfigError

PROGRESS_SETTINGS = ("auto", "true", "false")


def progress_enabled(setting: object, stream: IO | None = None) -> bool:
    """Whether to draw a progress bar.

    Args:
        setting: ``"auto"``, ``True``/``"true"`` or ``False``/``"false"`` (YAML gives booleans,
            the command line may give either).
        stream: where the bar goes (default ``sys.stderr``); ``auto`` draws it on a terminal only.

    Raises:
        ConfigError: on any other value, naming the valid ones.
    """
    text = str(setting).strip().lower()
    if text in ("true", "1", "on", "yes"):
        return True
    if text in ("false", "0", "off", "no", "none"):
        return False
    if text == "auto":
        stream = sys.stderr if stream is None else stream
        return bool(getattr(stream, "isatty", lambda: False)())
    raise ConfigError(f"progress={setting!r}; expected one of {', '.join(PROGRESS_SETTINGS)}")


def progress_bar(total: int, description: str, setting: object = "auto", stream: IO | None = None):
    """A tqdm bar over ``total`` steps (elapsed and remaining time), or None when it is off.

    Args:
        total: number of steps.
        description: the bar's label, e.g. ``"jpeg on kitti_mini/test"``.
        setting: see :func:`progress_enabled`.
        stream: where the bar goes (default ``sys.stderr``).
    """
    if not progress_enabled(setting, stream):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="image", file=sys.stderr if stream is None else stream,
                dynamic_ncols=True, leave=True)
