"""What crosses between the judge and a worker, and how it is decoded.

Judge → worker messages are pickled: the judge is trusted and the worker may
run anything anyway. Worker → judge messages are written with ``torch.save``
and read with ``torch.load(weights_only=True)``, which rebuilds tensors and
plain containers and refuses to run code, so nothing a submission sends can
execute in the judge.

Values that are not plain data stay in the worker; a marker dict stands in
for them (``{REMOTE: handle, "type": ..., "repr": ...}``) and the judge turns it
into a proxy. A matplotlib figure is described in the worker and crosses as
``{FIGURE: description}`` (see ``grader.figures``).
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from typing import Any

import torch

REMOTE = "__grader_remote__"
FIGURE = "__grader_figure__"
MAX_MESSAGE_BYTES = 512 * 2**20  # a reply larger than this is refused in the worker


@dataclass(frozen=True)
class Ref:
    """A judge-side reference to an object that lives in the worker (handle id)."""

    handle: int


class ProtocolError(Exception):
    """A worker reply that cannot be decoded (too large, or not plain data)."""


def dumps_request(message: dict) -> bytes:
    """Encode a judge → worker message (pickle; the judge is the trusted side)."""
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


class _RequestUnpickler(pickle.Unpickler):
    """Resolves this module's classes without importing ``grader`` (refused in the worker)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__:
            return globals()[name]
        return super().find_class(module, name)


def loads_request(data: bytes) -> dict:
    """Decode a judge → worker message (runs in the worker only)."""
    return _RequestUnpickler(io.BytesIO(data)).load()


def dumps_reply(message: Any) -> bytes:
    """Encode a worker → judge message of tensors and plain containers.

    Raises:
        ProtocolError: the encoded message exceeds ``MAX_MESSAGE_BYTES``.
    """
    buffer = io.BytesIO()
    torch.save(message, buffer)
    if buffer.tell() > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"the result is {buffer.tell() / 2**20:.0f} MiB, over the {MAX_MESSAGE_BYTES // 2**20} MiB limit")
    return buffer.getvalue()


def loads_reply(data: bytes) -> Any:
    """Decode a worker → judge message without running any of its code.

    Raises:
        ProtocolError: the bytes are not a weights-only ``torch.save`` payload.
    """
    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything the submission sent that we cannot read
        raise ProtocolError(f"the worker sent data that is not plain tensors/containers ({type(exc).__name__})") from None
