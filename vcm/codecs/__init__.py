"""Learned codecs: plain CompressAI ``CompressionModel``s, one file per family."""
import warnings

with warnings.catch_warnings():
    # CompressAI 1.2 applies torch.jit.script at import time, which torch 2.x deprecates with a
    # FutureWarning that every vcm command would print; vcm never scripts a model.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    import compressai  # noqa: F401
