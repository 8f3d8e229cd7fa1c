"""The interfaces every component kind implements.

Protocols, not base classes: a plugin needs no inheritance, only these members.
Every registered component also has `name: ClassVar[str]`, a frozen attrs
`Config` class and `from_config(config, **deps)`; see `Component`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import attrs

from .batch import Generation, Record, Segment, TokenBatch
from .errors import UserError
from .token_space import JointTokenSpace, TokenSpace


@runtime_checkable
class Component(Protocol):
    """What the registry requires of every registered class."""

    name: ClassVar[str]
    Config: ClassVar[type]

    @classmethod
    def from_config(cls, config: Any, **deps: Any) -> Any: ...


@runtime_checkable
class Tokenizer(Protocol):
    """Turns one modality's raw items into tokens and back.

    Raw items are whatever the modality's plugin defines (images: uint8 tensors
    [B, 3, H, W]; text: lists of str). `load_item` turns a Record's stored bytes
    into one raw item, so the token cache can encode any modality.

    Optional: a tokenizer whose codes are vectors (a VQ codebook) may offer
    `code_vectors() -> Tensor [vocab_size, D]`; models built for training may
    start their code embeddings from it (plugins/models/code_init.py). A
    tokenizer may offer `present(item)`: how a decoded item is kept in a
    Generation (images: numpy uint8 [H, W, 3]); without it items are kept as
    `decode` returns them. A trainable tokenizer offers `fit(records, *,
    out_dir, tracker, device, seed)`. A subword tokenizer may offer
    `encode_dropout(items, *, rate, seeds) -> Segment`: `encode` with
    BPE-dropout (each merge skipped with chance `rate`), row i a function of
    items[i], `rate` and seeds[i] alone; the cache stage's `bpe_dropout` needs
    it of the caption tokenizer.
    An image tokenizer may offer
    `encode_grid(images) -> Tensor [B, h, w]` for images of another size than its
    square (MixSel's pixel mixing encodes squeezed halves with it).
    A tokenizer whose presented items are no pictures may offer
    `picture(item) -> numpy uint8 [H, W, 3]`, how grids of generations show one
    (a sound: its spectrogram), and `files(item) -> dict[str, bytes]`, files by
    suffix that keep one in a usual format (a sound: {"wav": ..., "png": ...}),
    which the generate stage writes and logs (mmgen.api.media_files).
    """

    name: ClassVar[str]
    modality: str

    @property
    def token_space(self) -> TokenSpace: ...

    def load_item(self, data: bytes) -> Any: ...

    def encode(self, items: Any) -> Segment: ...

    def decode(self, segment: Segment) -> list[Any]: ...

    def save(self, directory: Path) -> None: ...

    @classmethod
    def load(cls, directory: Path) -> Tokenizer:
        """The tokenizer `save` wrote (the tokenizers stage reads it back, checked by `content_hash`)."""

    def content_hash(self) -> str: ...


@runtime_checkable
class Model(Protocol):
    """A network over packed joint-token sequences: a torch `nn.Module` (the trainer and the saved-model
    layout use its parameters, state_dict and `to`).

    Optional: `default_sampler: ClassVar[str]`, the sampler generation uses
    when a recipe names none (MAGVLT: maskgit).
    """

    name: ClassVar[str]
    token_space: JointTokenSpace

    def __call__(self, packed: Any) -> Any:
        """Hidden states [B, S, D] for a `layout.Packed` sequence."""

    def logits(self, hidden: Any, modality: str) -> Any:
        """Logits over `modality`'s content vocabulary only: [..., vocab_size]."""


@runtime_checkable
class LengthPredictor(Protocol):
    """A model with a target-length head (MAGVLT's L_TL on the BEGIN token)."""

    def length_logits(self, hidden: Any, modality: str) -> Any:
        """[..., max_length] from BEGIN states of `modality`'s segment; class k means length k + 1."""


@attrs.frozen(kw_only=True)
class ObjectiveOutput:
    loss: Any
    metrics: Mapping[str, float] = attrs.field(factory=dict)


@attrs.define(kw_only=True)
class StepInput:
    """Everything one training step's objectives see.

    `shared` lets objectives reuse work within the step (UnrollMask and the
    length head read the forward pass that mask prediction made).
    """

    batch: TokenBatch
    task: Any
    generator: Any
    step: int = 0
    shared: dict[str, Any] = attrs.field(factory=dict)


@runtime_checkable
class Objective(Protocol):
    """One training loss; the step's total is the sum of `weight` x each objective's loss."""

    name: ClassVar[str]
    weight: float

    def __call__(self, model: Model, inputs: StepInput) -> ObjectiveOutput: ...


@attrs.frozen(kw_only=True)
class RequestSegment:
    """One segment of a generation request.

    `known` [B, L] marks positions given as context; the sampler fills the rest.
    `lengths` fixes each row's length; None on a variable-length target means
    the model predicts it.
    """

    modality: str
    tokens: Any
    known: Any
    lengths: Any | None = None
    target: bool = False


@attrs.frozen(kw_only=True)
class GenerationRequest:
    segments: tuple[RequestSegment, ...] = attrs.field(converter=tuple)


@runtime_checkable
class Sampler(Protocol):
    name: ClassVar[str]

    def generate(self, model: Model, request: GenerationRequest, *, generator: Any) -> TokenBatch:
        """Fill every unknown position; returns the target segments, in request order."""


@runtime_checkable
class Reranker(Protocol):
    """Scores candidate rows; the generation pipeline keeps each prompt's best.

    `scores` gets every segment of the candidates by modality: the given ones
    and the generated ones (a generated segment replaces a given one of the same
    modality). `modalities` are those it reads; a task lacking one is an error
    before any sampling.
    """

    name: ClassVar[str]
    modalities: tuple[str, ...]

    def scores(self, segments: Mapping[str, Segment]) -> Any:
        """[B] one score per row; higher is better."""


@runtime_checkable
class Refiner(Protocol):
    """Improves chosen outputs after sampling (and reranking).

    `refines`: the generated modalities it changes; `modalities`: all it reads.
    A task that does not make the one or give the other is an error before any
    sampling.
    """

    name: ClassVar[str]
    modalities: tuple[str, ...]
    refines: tuple[str, ...]

    def refine(self, inputs: Mapping[str, Segment], outputs: Mapping[str, Segment]) -> dict[str, Segment]:
        """The outputs, refined: the same modalities, rows and shapes."""


@runtime_checkable
class Dataset(Protocol):
    """A source of records, split by name ("train", "val", "test")."""

    name: ClassVar[str]

    def splits(self) -> Sequence[str]: ...

    def records(self, split: str) -> Iterator[Record]: ...


@runtime_checkable
class Metric(Protocol):
    name: ClassVar[str]

    def compute(self, generations: Iterable[Generation]) -> dict[str, float]: ...


class TrackerUnavailable(UserError, RuntimeError):
    """A tracking back end cannot be reached; trackers raise it from `start`, before any work."""


@runtime_checkable
class Tracker(Protocol):
    """Experiment tracking: one run per `mmgen run`, children for sweeps."""

    name: ClassVar[str]

    def start(
        self,
        *,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> None:
        """Open a run; a sweep's variant is a child of `parent_run_id`, and `run_id` reopens a run to go on with it
        (a tracker without such runs may ignore both)."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None: ...

    def log_artifact(self, path: Path, *, artifact_path: str | None = None) -> None: ...

    def log_text(self, text: str, *, file_name: str) -> None: ...

    def log_image(self, image: Any, *, file_name: str, key: str | None = None, step: int | None = None) -> None:
        """A uint8 [H, W, 3] picture kept as `file_name`; with `key`, also the picture at `step` of the series
        `key` (a tracker that shows series, as MLflow's run view does, lets one step through them)."""

    def log_table(self, data: Mapping[str, Sequence[Any]], *, file_name: str) -> None:
        """Columns of equal length (name -> values), kept as a table `file_name` (`.json`) the run's view shows."""

    def end(self, *, status: str = "FINISHED") -> None: ...
