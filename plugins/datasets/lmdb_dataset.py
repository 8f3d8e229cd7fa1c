"""The `lmdb` dataset plugin: records read back from stores written by `mmgen data ingest`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Iterator

import attrs

from mmgen.api import FieldError, MissingSplitError, existing_dir


def find_stores(path: Path, split: str) -> dict[str, Path]:
    """`path` itself as split `split` when it is a store, else its `<split>.lmdb` stores by split."""
    if (path / "data.mdb").is_file():
        return {split: path}
    return {p.name[: -len(".lmdb")]: p for p in sorted(path.glob("*.lmdb")) if (p / "data.mdb").is_file()}


def holds_stores(_instance: Any, attribute: Any, value: str) -> None:
    """A Config validator: `value` is a store or a folder of stores (an existing folder, checked first)."""
    if not find_stores(Path(value), "train"):
        raise FieldError(
            attribute.name,
            f"{value!r} is neither an lmdb store nor a folder of <split>.lmdb stores (`mmgen data ingest` writes them)",
        )


class LmdbDataset:
    """Splits are the `<split>.lmdb` stores in a folder, or one store given directly (as split `split`)."""

    name: ClassVar[str] = "lmdb"

    @attrs.frozen(kw_only=True)
    class Config:
        # Checked when the recipe loads; a relative path is read from the working directory.
        path: str = attrs.field(validator=[existing_dir, holds_stores])
        split: str = "train"  # the split name of a single store

    def __init__(self, *, path: Path | str, split: str = "train") -> None:
        self.path = Path(path)
        self.stores = find_stores(self.path, split)
        if not self.stores:
            raise FileNotFoundError(f"lmdb dataset: {self.path} is neither a store nor a folder of <split>.lmdb stores")

    @classmethod
    def from_config(cls, config: Config, **_deps: Any) -> LmdbDataset:
        return cls(path=config.path, split=config.split)

    def splits(self) -> tuple[str, ...]:
        return tuple(self.stores)

    def store(self, split: str) -> Any:
        from .lmdb_store import LmdbStore  # here, so registering the plugin does not import torch

        if split not in self.stores:
            raise MissingSplitError(f"lmdb dataset {self.path} has no split {split!r}; it has {list(self.stores)}")
        return LmdbStore(self.stores[split])

    def count(self, split: str) -> int:
        return len(self.store(split))

    def records(self, split: str) -> Iterator[Any]:
        return self.store(split).records()

