"""dp_models: the dp-models model manager from Python.

Models are declared in a catalog of spec files, verified against their pinned digests and
loaded once per process; nothing is ever downloaded. See docs/python.md.

    import dp_models
    manager = dp_models.ModelManager()          # specs/catalog, .dp-assets/models
    result = manager.task(["a text"], "embedding", "all-minilm-l6-v2")
    result.embeddings                           # numpy float32, shape (1, 384)
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Optional

from . import _native
from ._errors import (
    ERROR_CLASSES,
    Cancelled,
    DeviceUnavailable,
    InsufficientGpuMemory,
    InsufficientMemory,
    InvalidInput,
    InvalidSpec,
    Io,
    ModelError,
    ModelNotFound,
    NetworkForbidden,
    OutputDrift,
    Overloaded,
    ProviderUnavailable,
    RoleUnresolved,
    TritonUnavailable,
    UnsupportedEngine,
    UnsupportedRuntime,
    VersionDrift,
    WeightsDigestMismatch,
    WeightsMissing,
)
from ._native import CancelToken, TaskResult, digest, validate, verify

__version__: str = _native.__version__

#: Every stable error code, in the order of ``dp_spec::ErrorCode``.
ERROR_CODES: "list[str]" = list(_native.error_codes())

#: The task types ``ModelManager.task`` knows.
TASK_TYPES: "list[str]" = list(_native.task_types())


class ModelManager(_native.ModelManager):
    """The model manager (see ``dp_models._native.ModelManager`` for every method).

    Adds ``atask``, the awaitable form of ``task`` for asyncio callers.
    """

    async def atask(
        self,
        task_data: Any,
        task_type: str,
        model_name: str,
        keep_alive: Optional[float] = None,
        **options: Any,
    ) -> TaskResult:
        """``task`` on the event loop's default executor (a thread): the loop keeps running
        while the model loads and runs (the GIL is released meanwhile).

        Cancelling the awaiting task gives the request up: if it still waits in its
        model's batching queue it leaves it and nothing is run for it; a model call already
        running for it (shared with other callers) finishes, its result dropped."""
        loop = asyncio.get_running_loop()
        token = CancelToken()
        call = functools.partial(
            self.task, task_data, task_type, model_name, keep_alive, cancel=token, **options
        )
        try:
            return await loop.run_in_executor(None, call)
        except asyncio.CancelledError:
            token.cancel()
            raise


__all__ = [
    "ERROR_CLASSES",
    "ERROR_CODES",
    "TASK_TYPES",
    "CancelToken",
    "Cancelled",
    "DeviceUnavailable",
    "InsufficientGpuMemory",
    "InsufficientMemory",
    "InvalidInput",
    "InvalidSpec",
    "Io",
    "ModelError",
    "ModelManager",
    "ModelNotFound",
    "NetworkForbidden",
    "OutputDrift",
    "Overloaded",
    "ProviderUnavailable",
    "RoleUnresolved",
    "TaskResult",
    "TritonUnavailable",
    "UnsupportedEngine",
    "UnsupportedRuntime",
    "VersionDrift",
    "WeightsDigestMismatch",
    "WeightsMissing",
    "digest",
    "validate",
    "verify",
]
