"""What the generation benchmarks share: held-out records and prompts, tasks and stage folders.

Generation runs through the core pipeline (`mmgen.generation.pipeline.
GenerationPipeline`) with task plugins (plugins/tasks/builtin.py); prompts are
built the way the `generate` stage builds them (plugins/stages/generate.py):
each record's item and first caption, its meta as the reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from mmgen.batch import Record
from mmgen.config import structure_spec
from mmgen.generation.task import GenerationTask, Prompt
from mmgen.plugins.datasets.data_stage import DataSplits
from mmgen.plugins.stages.generate import example
from mmgen.stage_folder import newest_finished

CAPTION_MODALITY = "text"
# Settings are tuned on val; test is read by the final evaluate stage only (recipes: `generate.split: test`).
TUNING_SPLIT = "val"


def add_split_option(parser: Any) -> None:
    """`--split`, the data split a benchmark reads its held-out records from: val unless asked."""
    parser.add_argument(
        "--split",
        default=TUNING_SPLIT,
        help=f"held-out records from this split (default {TUNING_SPLIT}: tune on val, the final evaluation reads test)",
    )


def read_records(data_dir: Path, split: str, *, limit: int) -> list[Record]:
    """The first `limit` records of `split` in a data stage folder (`<data>/<split>.lmdb`)."""
    store = DataSplits(Path(data_dir)).records(split)
    return [store[index] for index in range(min(limit, len(store)))]


def build_task(name: str, registry: Any) -> GenerationTask:
    """The registered generation task called `name` ("t2i", "i2t", ...) with its default options."""
    return registry.build(structure_spec("tasks", name, path="task", registry=registry))


def task_prompts(task: GenerationTask, records: Sequence[Record], tokenizers: Mapping[str, Any]) -> list[Prompt]:
    """One prompt of `task` per record, as the generate stage makes them from held-out records."""
    return task.prompts([example(record, tokenizers, caption_modality=CAPTION_MODALITY) for record in records])


def stage_folder(given: Path | None, workdir: Path, key: str) -> Path:
    """`given`, or the newest finished `<workdir>/artefacts/<key>-<hash>` folder."""
    return Path(given) if given is not None else newest_finished(workdir, key)
