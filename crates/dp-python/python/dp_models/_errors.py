"""The exceptions of dp_models: ``ModelError`` and one subclass per stable error code.

The compiled module raises them through ``_from_native``; the codes are those of
``dp_spec::ErrorCode`` (``dp_models.ERROR_CODES``).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type


class ModelError(Exception):
    """A dp-models error.

    Attributes:
        error_code: the stable snake_case code (``weights_missing``, ``invalid_input``, ...).
        message: what happened and what to do about it.
        model: the model concerned, when there is one (``details["model"]``).
        details: structured context (files, expected and actual digests, ...), a dict.
    """

    #: The code of the subclass; ``ModelError`` itself stands for any code.
    code: str = ""

    def __init__(
        self,
        message: str,
        error_code: Optional[str] = None,
        details: Optional[Dict[str, Any]] = None,
        model: Optional[str] = None,
    ) -> None:
        super().__init__(f"{error_code or self.code}: {message}")
        self.error_code: str = error_code or self.code
        self.message: str = message
        self.details: Dict[str, Any] = dict(details or {})
        found = model if model is not None else self.details.get("model")
        self.model: Optional[str] = found if isinstance(found, str) else None


class ModelNotFound(ModelError):
    """No model with that name or alias is in the catalog."""

    code = "model_not_found"


class WeightsMissing(ModelError):
    """A local artifact a spec names is absent under the models root."""

    code = "weights_missing"


class WeightsDigestMismatch(ModelError):
    """The bytes on disk differ from the pinned digest."""

    code = "weights_digest_mismatch"


class TritonUnavailable(ModelError):
    """A Triton endpoint refused, timed out or failed."""

    code = "triton_unavailable"


class InsufficientGpuMemory(ModelError):
    """A model does not fit in GPU memory, even after evicting every idle model."""

    code = "insufficient_gpu_memory"


class InsufficientMemory(ModelError):
    """A model does not fit in the RAM budget, even after evicting every idle model."""

    code = "insufficient_memory"


class UnsupportedRuntime(ModelError):
    """The spec asks for a runtime this build does not know."""

    code = "unsupported_runtime"


class UnsupportedEngine(ModelError):
    """The spec asks for an engine its runtime cannot run."""

    code = "unsupported_engine"


class NetworkForbidden(ModelError):
    """Something would need the network (a URL artifact, a non-allowed endpoint)."""

    code = "network_forbidden"


class InvalidSpec(ModelError):
    """A spec, profile or override is malformed."""

    code = "invalid_spec"


class RoleUnresolved(ModelError):
    """No catalog entry has the requested role and capabilities."""

    code = "role_unresolved"


class VersionDrift(ModelError):
    """A locked model's bytes no longer match its lock entry."""

    code = "version_drift"


class ProviderUnavailable(ModelError):
    """The provider is not compiled in, or its runtime library cannot be found."""

    code = "provider_unavailable"


class InvalidInput(ModelError):
    """A request's data does not fit the task or the model, or a machine-written file is malformed."""

    code = "invalid_input"


class Io(ModelError):
    """The operating system refused a read, write or lock (permissions, full disk)."""

    code = "io"


class Overloaded(ModelError):
    """The model's request queue is full: retry after a moment (nothing was run)."""

    code = "overloaded"


class OutputDrift(ModelError):
    """A model's outputs on its probe inputs differ from the golden outputs pinned in the
    lock file beyond their tolerance (the bytes may all match)."""

    code = "output_drift"


class DeviceUnavailable(ModelError):
    """The device a spec asks for is not on this machine or not usable by this build
    (``cuda`` without a GPU or a CUDA build, ``cuda:N`` past the last device); dp-models never
    runs the model on another device instead."""

    code = "device_unavailable"


class Cancelled(ModelError):
    """The caller gave up on the request before it ran (an ``atask`` cancelled, a
    ``CancelToken`` cancelled): nothing was run for it."""

    code = "cancelled"


#: The exception class of each error code.
ERROR_CLASSES: Dict[str, Type[ModelError]] = {
    cls.code: cls
    for cls in (
        ModelNotFound,
        WeightsMissing,
        WeightsDigestMismatch,
        TritonUnavailable,
        InsufficientGpuMemory,
        InsufficientMemory,
        UnsupportedRuntime,
        UnsupportedEngine,
        NetworkForbidden,
        InvalidSpec,
        RoleUnresolved,
        VersionDrift,
        ProviderUnavailable,
        InvalidInput,
        Io,
        Overloaded,
        OutputDrift,
        DeviceUnavailable,
        Cancelled,
    )
}


def _from_native(code: str, message: str, details: Optional[Dict[str, Any]]) -> ModelError:
    """The exception the compiled module raises for a Rust ``ModelError``."""
    cls = ERROR_CLASSES.get(code, ModelError)
    return cls(message, error_code=code, details=details)
