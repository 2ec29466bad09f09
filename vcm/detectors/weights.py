"""Pretrained torchvision weights for the detector backbones: the hub cache, a bounded-time download,
local backbone files."""
from __future__ import annotations

import os
import socket
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor
from torchvision.models._api import WeightsEnum

from vcm.errors import ConfigError

#: Seconds a single network operation (name lookup, connect, read) may take while fetching weights.
DOWNLOAD_TIMEOUT_S = 10.0

class WeightsUnavailableError(ConfigError, RuntimeError):
    """Pretrained weights are neither in the torch hub cache nor downloadable (e.g. no network)."""


# ------------------------------------------------------------------------------- pretrained weights
def read_backbone_file(path: str | os.PathLike, backbone: str) -> dict[str, Tensor]:
    """An ImageNet backbone state dict from a local file (``detector.backbone_weights``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"detector.backbone_weights={path}: no such file (expected the {backbone} ImageNet backbone's state dict "
            f"in torchvision's layout; or set weights=IMAGENET to use torchvision's download)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsUnavailableError(f"detector.backbone_weights={path} cannot be read as a state dict: {type(e).__name__}: {e}") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"detector.backbone_weights={path} holds {type(state).__name__}, expected a state dict of tensors")
    return dict(state)


def _weights_file(tv_weights: WeightsEnum) -> Path:
    """Where torchvision caches ``tv_weights`` (``$TORCH_HOME/hub/checkpoints/<file>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(tv_weights.url).path)


def fetch_state_dict(tv_weights: WeightsEnum, what: str) -> dict[str, Tensor]:
    """The state dict of ``tv_weights`` from the hub cache, downloading it (bounded time) if absent."""
    path = _weights_file(tv_weights)
    if not path.is_file():
        try:
            _download(tv_weights.url, path)
        except Exception as e:  # whatever failed (DNS, proxy, timeout, HTTP, hash), the fix is the same
            raise WeightsUnavailableError(
                f"could not get the pretrained {what} weights: {type(e).__name__}: {e}. "
                f"Pretrained weights are downloaded once from {tv_weights.url} into the torch hub cache "
                f"(TORCH_HOME, now {torch.hub.get_dir()}). On a machine without network access, fetch the "
                f"file elsewhere and place it at {path} (e.g. `curl -L -o {path.name} {tv_weights.url}`), "
                f"or set TORCH_HOME to a folder whose hub/checkpoints/ holds it; or use weights=null "
                f"(random init) or a detector checkpoint."
            ) from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsUnavailableError(
            f"pretrained {what} weights file {path} cannot be read ({type(e).__name__}: {e}); delete it to "
            f"download it again from {tv_weights.url}, or replace it with a good copy"
        ) from e


def _download(url: str, dst: Path) -> None:
    """Download ``url`` to ``dst`` atomically; no single network operation waits for more than
    ``DOWNLOAD_TIMEOUT_S`` seconds, so an offline machine fails quickly instead of hanging."""
    _resolve_within(url, DOWNLOAD_TIMEOUT_S)
    dst.parent.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(dst.name)
    previous = socket.getdefaulttimeout()
    # urllib (used by torch.hub) has no timeout of its own; the default socket timeout bounds every
    # connect and read (not the whole transfer, so a slow but live download still completes).
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(url, str(dst), hash_prefix=match.group(1) if match else None, progress=False)
    finally:
        socket.setdefaulttimeout(previous)


def _resolve_within(url: str, timeout: float) -> None:
    """Resolve the host urllib will connect to (the proxy if one is set) within ``timeout`` seconds.

    Name lookups ignore socket timeouts and can block for minutes with a dead resolver, so the lookup
    runs in a daemon thread that is abandoned if it does not answer in time.
    """
    host = urlparse(url).hostname or ""
    proxy = urllib.request.getproxies().get(urlparse(url).scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        host = urlparse(proxy if "://" in proxy else f"http://{proxy}").hostname or host
    outcome: dict[str, BaseException] = {}

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, 443)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            outcome["error"] = e

    thread = threading.Thread(target=lookup, name=f"resolve-{host}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer resolving {host} within {timeout:.0f} s")
    if "error" in outcome:
        raise outcome["error"]
