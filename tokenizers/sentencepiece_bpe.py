"""`sentencepiece_bpe`: a BPE text tokenizer trained in-process from a dataset's captions.

MAGVLT's text side (magvlt.md, "Tokens"): lower-cased BPE, at most `max_length`
tokens, end-of-text closes every caption and also serves as the pad, BPE-dropout
(0.1; Provilkov et al. 2020) during training only: `encode_dropout(items, rate=,
seeds=)` gives seeded dropped-merge rows, which the cache stage stores for the
train split (its `bpe_dropout` option sets the rate recipes train with; this
tokenizer's own `dropout` is only what `encode(training=True)` uses, and kept
so saved tokenizers and their hashes stay as they were). Text is whitespace-collapsed
and lower-cased; characters never seen in training decode to nothing unless
`byte_fallback` spells them as UTF-8 bytes (256 extra pieces, so it needs
vocab_size >= 256 + the characters seen).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import secrets
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

import attrs

from mmgen.api import MissingSplitError, Record, Segment, TokenSpace, atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

MODEL_FILE = "spm.model"
CONFIG_FILE = "bpe.json"
UNK_ID, EOS_ID = 0, 1  # SentencePiece ids we reserve; no BOS and no separate PAD (EOS pads)


class SentencePieceBPE:
    name: ClassVar[str] = "sentencepiece_bpe"

    @attrs.frozen(kw_only=True)
    class Config:
        modality: str = "text"
        vocab_size: int = 49_408  # the paper's; small corpora get fewer (see `fit`)
        max_length: int = 64
        dropout: float = 0.1  # BPE-dropout of encode(training=True); recipes: the cache stage's bpe_dropout.rate
        lowercase: bool = True
        max_sentences: int = 2_000_000  # captions read for training
        byte_fallback: bool = False

    def __init__(
        self,
        *,
        modality: str = "text",
        vocab_size: int = 49_408,
        max_length: int = 64,
        dropout: float = 0.1,
        lowercase: bool = True,
        max_sentences: int = 2_000_000,
        byte_fallback: bool = False,
        model_proto: bytes | None = None,
    ) -> None:
        if max_length < 2:
            raise ValueError(f"sentencepiece_bpe: max_length must be >= 2 (a token and EOS), got {max_length}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"sentencepiece_bpe: dropout must be in [0, 1), got {dropout}")
        self.modality = modality
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.dropout = dropout
        self.lowercase = lowercase
        self.max_sentences = max_sentences
        self.byte_fallback = byte_fallback
        self._processor: Any = None
        self._proto: bytes | None = None
        self._table: tuple[dict[str, int], dict[str, float]] | None = None
        if model_proto is not None:
            self._set_model(model_proto)

    @classmethod
    def from_config(cls, config: Config, **_: Any) -> SentencePieceBPE:
        return cls(**attrs.asdict(config))

    def _options(self) -> dict[str, Any]:
        return {
            "modality": self.modality,
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "dropout": self.dropout,
            "lowercase": self.lowercase,
            "max_sentences": self.max_sentences,
            "byte_fallback": self.byte_fallback,
        }

    def _set_model(self, proto: bytes) -> None:
        import sentencepiece as spm

        processor = spm.SentencePieceProcessor()
        processor.LoadFromSerializedProto(proto)
        if processor.eos_id() != EOS_ID or processor.unk_id() != UNK_ID:
            raise ValueError("sentencepiece_bpe: model was not trained with unk=0, eos=1")
        self._processor, self._proto = processor, proto
        self._table = None

    @property
    def trained(self) -> bool:
        return self._processor is not None

    def _require(self) -> Any:
        if self._processor is None:
            raise RuntimeError("sentencepiece_bpe: not trained yet; call fit() or load()")
        return self._processor

    # --- training -------------------------------------------------------

    def train(self, texts: Iterable[str]) -> None:
        """Train BPE on `texts` (deterministic: one thread, no sentence sampling)."""
        import sentencepiece as spm

        sentences = [self._normalise(t) for _, t in zip(range(self.max_sentences), texts)]
        sentences = [s for s in sentences if s]
        if not sentences:
            raise ValueError("sentencepiece_bpe: no non-empty text to train on")
        model = io.BytesIO()
        try:
            self._learn(spm, sentences, model)
        except RuntimeError as exc:
            raise ValueError(f"sentencepiece_bpe: training failed: {exc}") from None
        self._set_model(model.getvalue())

    def _learn(self, spm: Any, sentences: list[str], model: io.BytesIO) -> None:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type="bpe",
            vocab_size=self.vocab_size,
            hard_vocab_limit=False,  # a small corpus (Shapes) has fewer merges than asked for
            character_coverage=1.0,
            byte_fallback=self.byte_fallback,
            unk_id=UNK_ID,
            eos_id=EOS_ID,
            bos_id=-1,
            pad_id=-1,
            num_threads=1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            minloglevel=2,
        )

    def fit(self, records: Callable[[str], Iterable[Record]], *, tracker: Any = None, **_: Any) -> None:
        """Train on every caption of the train split; log vocabulary and lengths on val when there is one."""
        captions = [caption for record in records("train") for caption in record.captions]
        self.train(captions)
        self.warn_if_cut(captions)
        if tracker is None:
            return
        try:
            val = records("val")
        except MissingSplitError:  # no val split: no statistics
            return
        stats = self.statistics(caption for record in val for caption in record.captions)
        tracker.log_metrics({f"{self.modality}/{name}": value for name, value in stats.items()})

    def warn_if_cut(self, texts: list[str]) -> None:
        """Say so when captions do not fit `max_length`: a model trained on cut captions writes cut ones."""
        lengths = [len(self._require().encode(self._normalise(t))) + 1 for t in texts]
        cut = sum(n > self.max_length for n in lengths)
        if cut:
            log.warning(
                "%s: %d of %d train captions (%.1f%%) are longer than max_length %d and are cut (the longest: %d "
                "tokens with EOS); raise max_length or vocab_size",
                self.modality, cut, len(lengths), 100 * cut / len(lengths), self.max_length, max(lengths),
            )

    def statistics(self, texts: Iterable[str]) -> dict[str, float]:
        """Vocabulary size, mean tokens per text (with EOS, after truncation) and the share truncated."""
        lengths = [len(self._require().encode(self._normalise(t))) + 1 for t in texts]
        count = max(len(lengths), 1)
        return {
            "vocab_size": float(self._require().get_piece_size()),
            "mean_length": sum(min(n, self.max_length) for n in lengths) / count,
            "truncated_share": sum(n > self.max_length for n in lengths) / count,
        }

    # --- the Tokenizer protocol -----------------------------------------

    @property
    def token_space(self) -> TokenSpace:
        size = self._require().get_piece_size()
        return TokenSpace(
            name=self.modality, vocab_size=size, shape=(self.max_length,), variable_length=True, pad_id=EOS_ID, eos_id=EOS_ID
        )

    def _normalise(self, text: str) -> str:
        text = " ".join(text.split())
        return text.lower() if self.lowercase else text

    def load_item(self, data: bytes) -> str:
        return data.decode("utf-8")

    def encode_ids(self, text: str, *, training: bool = False) -> list[int]:
        """Token ids of one text, ending in EOS, at most `max_length` long (BPE-dropout only with `training`)."""
        if training:
            return self._encode_rows([text], rate=self.dropout, seeds=[secrets.randbits(32)])[0]
        return self._encode_rows([text])[0]

    def _encode_rows(self, texts: Sequence[str], *, rate: float = 0.0, seeds: Sequence[int] = ()) -> list[list[int]]:
        """Ids of each text, ending in EOS, at most `max_length` long; with `rate` > 0 BPE-dropped (row i: seeds[i])."""
        normalised = [self._normalise(t) for t in texts]
        if rate <= 0:
            pieces = self._require().encode(normalised, out_type=int)
        else:
            import numpy as np

            pieces = [
                self._merge(text, rate=rate, rng=np.random.default_rng(int(seed)))
                for text, seed in zip(normalised, seeds, strict=True)
            ]
        return [[*ids[: self.max_length - 1], EOS_ID] for ids in pieces]

    def _merge(self, text: str, *, rate: float, rng: Any) -> list[int]:
        """SentencePiece's BPE encoding of `text`, each merge skipped with chance `rate` (drawn from `rng`).

        Our own loop, not sentencepiece's `enable_sampling`: that one draws from a
        per-thread generator whose stream for a given seed differs between
        processes (sentencepiece 0.2.3), so a cache built from a seed would not
        be reproducible. The merge order is sentencepiece's: the highest-scored
        adjacent pair first, the leftmost on a tie; with `rate` 0 the ids equal
        `encode`'s (tests/test_bpe_dropout.py checks it).
        """
        import heapq

        pieces, scores = self._merge_table()
        symbols = list(self._require().normalize(text))
        after = [*range(1, len(symbols)), -1]
        before = list(range(-1, len(symbols) - 1))
        agenda: list[tuple[float, int, int, int]] = []

        def offer(left: int, right: int) -> None:
            if left >= 0 and right >= 0 and (merged := symbols[left] + symbols[right]) in pieces:
                heapq.heappush(agenda, (-scores[merged], left, right, len(merged)))

        for right in range(1, len(symbols)):
            offer(right - 1, right)
        while agenda:
            _, left, right, size = heapq.heappop(agenda)
            if not symbols[left] or not symbols[right] or len(symbols[left]) + len(symbols[right]) != size:
                continue  # one side was merged into something else since
            if rate > 0 and (rate >= 1 or rng.random() < rate):
                continue
            symbols[left], symbols[right] = symbols[left] + symbols[right], ""
            after[left] = after[right]
            if after[right] >= 0:
                before[after[right]] = left
            offer(before[left], left)
            offer(left, after[left])
        return self._piece_ids([s for s in symbols if s])

    def _merge_table(self) -> tuple[dict[str, int], dict[str, float]]:
        """The ordinary pieces (id by piece) and their scores: what a merge may make."""
        if self._table is None:
            processor = self._require()
            ids = {}
            for i in range(processor.get_piece_size()):
                special = processor.is_control(i) or processor.is_unknown(i) or processor.is_byte(i)
                if not (special or processor.is_unused(i)):
                    ids[processor.id_to_piece(i)] = i
            self._table = (ids, {piece: processor.get_score(i) for piece, i in ids.items()})
        return self._table

    def _piece_ids(self, symbols: list[str]) -> list[int]:
        """Ids of merged symbols: an unknown character as its UTF-8 bytes with byte_fallback, else one UNK a run."""
        processor = self._require()
        pieces, _ = self._merge_table()
        ids: list[int] = []
        for symbol in symbols:
            if symbol in pieces:
                ids.append(pieces[symbol])
            elif self.byte_fallback:
                ids += [processor.piece_to_id(f"<0x{byte:02X}>") for byte in symbol.encode("utf-8")]
            elif not ids or ids[-1] != UNK_ID:
                ids.append(UNK_ID)
        return ids

    def _segment(self, rows: list[list[int]]) -> Segment:
        import torch

        padded = [ids + [EOS_ID] * (self.max_length - len(ids)) for ids in rows]
        tokens = torch.tensor(padded, dtype=torch.long).reshape(len(rows), self.max_length)
        lengths = torch.tensor([len(ids) for ids in rows], dtype=torch.long)
        return Segment(modality=self.modality, tokens=tokens, lengths=lengths)

    def encode(self, items: Sequence[str], *, training: bool = False, seed: int | None = None) -> Segment:
        """Texts -> ids [B, max_length] ending in EOS and padded with EOS; lengths count the EOS.

        With `training`, BPE-dropout skips each merge with probability `dropout`;
        `seed` makes that draw repeatable (row i under the i-th number a
        SeedSequence of `seed` draws; no seed: fresh entropy).
        """
        if isinstance(items, str):
            raise TypeError("sentencepiece_bpe: encode takes a list of texts, not one str")
        items = list(items)
        if not (training and self.dropout > 0):
            return self._segment(self._encode_rows(items))
        if seed is None:
            seeds = [secrets.randbits(32) for _ in items]
        else:
            import numpy as np

            seeds = np.random.SeedSequence(seed).generate_state(len(items), np.uint32).tolist()
        return self.encode_dropout(items, rate=self.dropout, seeds=seeds)

    def encode_dropout(self, items: Sequence[str], *, rate: float, seeds: Sequence[int]) -> Segment:
        """`encode` with BPE-dropout (Provilkov et al. 2020): each merge skipped with probability `rate`.

        Row i depends on items[i], `rate` and seeds[i] (an int >= 0, a NumPy
        generator's seed) only, so a token cache built from a recipe's seed is
        the same in any process, on any machine and batch size. Every row
        decodes to its text, unless it was cut at `max_length` (a dropped-merge
        row is longer than the canonical one).
        """
        if isinstance(items, str):
            raise TypeError("sentencepiece_bpe: encode_dropout takes a list of texts, not one str")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"sentencepiece_bpe: BPE-dropout rate must be in [0, 1], got {rate}")
        items = list(items)
        if len(seeds) != len(items):
            raise ValueError(f"sentencepiece_bpe: {len(items)} texts but {len(seeds)} seeds")
        return self._segment(self._encode_rows(items, rate=rate, seeds=seeds))

    def decode_ids(self, ids: Iterable[int]) -> str:
        """Text of `ids`, stopping at EOS; special and out-of-range ids are dropped."""
        processor = self._require()
        size = processor.get_piece_size()
        kept = []
        for token in ids:
            if token == EOS_ID:
                break
            if 0 <= token < size and not processor.is_control(token) and token != UNK_ID:
                kept.append(int(token))
        return processor.decode(kept)

    def pieces(self) -> list[str]:
        """Each id's piece string (`▁` marks a word start): what a token transfer matches ids by."""
        processor = self._require()
        return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]

    def decode(self, segment: Segment) -> list[str]:
        tokens, lengths = segment.tokens.tolist(), segment.lengths.tolist()
        return [self.decode_ids(row[:n]) for row, n in zip(tokens, lengths)]

    # --- persistence ----------------------------------------------------

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        proto = self._proto if self._proto is not None else self._require()
        atomic_write_bytes(directory / MODEL_FILE, proto)
        atomic_write_text(directory / CONFIG_FILE, json.dumps(self._options(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> SentencePieceBPE:
        directory = Path(directory)
        options = json.loads((directory / CONFIG_FILE).read_text())
        return cls(**options, model_proto=(directory / MODEL_FILE).read_bytes())

    def content_hash(self) -> str:
        proto = self._proto if self._proto is not None else self._require()
        digest = hashlib.sha256(proto)
        digest.update(json.dumps(self._options(), sort_keys=True).encode())
        return digest.hexdigest()[:16]
