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


def time_left(planned: dict[str, int], steps: list[dict]) -> str:
    """How far a study is and about how long it has left: ``"5/14 steps, about 6.2 min left"``.

    Each kind of step (``"train"``, ``"eval"``) is estimated from the mean time of the finished
    steps of that kind (of any kind while none has finished), times the steps of that kind still to
    run; steps kept from an earlier run count as done and take no time.

    Args:
        planned: the number of steps the study will take, by kind.
        steps: the steps so far, dicts with ``kind`` and, when they ran, ``seconds``.

    Returns:
        The text, or "" when nothing is planned.
    """
    total = sum(planned.values())
    if not total:
        return ""
    done = {kind: [s for s in steps if s.get("kind") == kind] for kind in planned}
    finished = sum(len(v) for v in done.values())
    timed = [float(s["seconds"]) for s in steps if s.get("kind") in planned and "seconds" in s]
    if not timed:
        return f"{finished}/{total} steps"
    left = 0.0
    for kind, count in planned.items():
        own = [float(s["seconds"]) for s in done[kind] if "seconds" in s] or timed
        left += max(count - len(done[kind]), 0) * sum(own) / len(own)
    return f"{finished}/{total} steps, about {left / 60:.1f} min left"
