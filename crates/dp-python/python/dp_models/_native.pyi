"""Type stubs of the compiled module dp_models._native (crates/dp-python/src)."""

from os import PathLike
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

_Path = Union[str, "PathLike[str]"]

__version__: str

def error_codes() -> List[str]:
    """Every stable error code, in declaration order."""

def task_types() -> List[str]:
    """The task type names ``ModelManager.task`` knows."""

class CancelToken:
    """A caller's way to give up on a ``task`` (its ``cancel=`` argument) from another
    thread; ``ModelManager.atask`` makes one and cancels it when the awaiting task is."""

    def __init__(self) -> None: ...
    def cancel(self) -> None:
        """Gives up: a request still queued for a batch leaves the queue with ``Cancelled``."""
    @property
    def cancelled(self) -> bool:
        """Whether ``cancel`` was called."""

class TaskResult:
    """The result of ``ModelManager.task``: the output in the attribute of its kind (the
    others are ``None``), and what produced it."""

    task_type: str
    #: ``embedding``, ``image_embedding``: float32, one row per input.
    embeddings: Optional[npt.NDArray[np.float32]]
    #: ``zero_shot_classification``: float32, one row per image, one column per label.
    probabilities: Optional[npt.NDArray[np.float32]]
    #: ``rerank`` without ``top_k``: float32, one score per document in input order.
    scores: Optional[npt.NDArray[np.float32]]
    #: ``rerank`` with ``top_k``: ``(index, score)``, best first.
    ranking: Optional[List[Tuple[int, float]]]
    #: ``text_generation``: one generated text per input; ``transcribe``: each transcript's text.
    texts: Optional[List[str]]
    #: ``transcribe``: per audio, ``text``, ``language``, ``duration_seconds``,
    #: ``chunk_token_ids`` (one list per 30-second chunk).
    transcripts: Optional[List[Dict[str, Any]]]
    #: ``infer``: output name -> array.
    tensors: Optional[Dict[str, Any]]
    #: Presets whose results are the model's own tensors: one dict per batch.
    tensor_batches: Optional[List[Dict[str, Any]]]
    #: The models used (specs/schema/models-used-entry.schema.json).
    models_used: List[Dict[str, Any]]
    model_signature: str
    #: True when the request had no data and only preloaded the model.
    preloaded: bool

class ModelManager:
    """The model manager, built as the ``dp`` command line builds it."""

    def __init__(
        self,
        catalog: Optional[_Path] = None,
        models_root: Optional[_Path] = None,
        profiles: Sequence[_Path] = (),
        overrides: Union[None, Sequence[str], Mapping[str, Any]] = None,
        embedding_cache: Union[None, bool, Mapping[str, Any]] = None,
        keep_alive: Optional[float] = None,
        *,
        verify_cache: Optional[_Path] = None,
        batching: Union[None, bool, Mapping[str, Any]] = None,
        max_loaded: Optional[int] = None,
        ram_budget_bytes: Optional[int] = None,
        vram_budget_bytes: Optional[int] = None,
        cuda_available: bool = False,
    ) -> None: ...
    def task(
        self,
        task_data: Any,
        task_type: str,
        model_name: str,
        keep_alive: Optional[float] = None,
        *,
        cancel: Optional[CancelToken] = None,
        **options: Any,
    ) -> TaskResult:
        """Runs a task (see docs/python.md); raises a ``ModelError`` subclass."""
    def preload(self, model: str, keep_alive: Optional[float] = None) -> None:
        """Loads (and verifies) a model now."""
    def release_model(self, model: str) -> bool:
        """Forgets a loaded model; whether it was loaded."""
    def get_model_status(self) -> Dict[str, Any]:
        """Loaded models, counters and the embedding cache's figures."""
    def clear_embedding_cache(self) -> None:
        """Empties the embedding cache (every text is embedded again)."""
    def resolve(
        self,
        name: Optional[str] = None,
        *,
        role: Optional[str] = None,
        capabilities: Sequence[str] = (),
    ) -> Dict[str, Any]:
        """What a name or role resolves to, as ``dp resolve --json``."""
    def health(self) -> Dict[str, Any]:
        """Whether each model could serve, without loading any (``dp health --json``)."""

def validate(
    paths: Sequence[_Path] = (),
    *,
    catalog: Optional[_Path] = None,
    profiles: Sequence[_Path] = (),
    overrides: Union[None, Sequence[str], Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """``dp validate --json``: ``{"errors", "models", "profiles"}``."""

def digest(
    path: _Path,
    algo: str = "sha256",
    *,
    cache: Optional[_Path] = None,
    strict: bool = False,
) -> Dict[str, Any]:
    """``dp digest --json``: ``{"digest"}`` or ``{"aggregate", "files"}``."""

def verify(
    names: Sequence[str] = (),
    lock: bool = False,
    *,
    strict: bool = False,
    catalog: Optional[_Path] = None,
    models_root: Optional[_Path] = None,
    profiles: Sequence[_Path] = (),
    overrides: Union[None, Sequence[str], Mapping[str, Any]] = None,
    lock_file: Optional[_Path] = None,
    cache: Optional[_Path] = None,
) -> Dict[str, Any]:
    """``dp verify --json``: ``{"lock_file", "ok", "models"}``."""
