"""`mmgen generate`: one generation task with a trained run's stage folders, through the core pipeline.

Its options are the generate stage's (generation/options.py), given as flags:
`--sampler`, `--candidates`, `--rerank`, `--refine`, and `--set PATH=VALUE` for
any option of those (`sampler.fixed.steps=8`, `rerank.passes=1`,
`refine.sweeps=2`) or of the task (`task.region=[0,0,0.5,0.5]`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import click

from .errors import UserError

# The stages generation reads, by the keys recipes give them.
MODEL_STAGE = "train"
TOKENIZERS_STAGE = "tokenizers"


def _set(data: dict[str, Any], parts: list[str], value: Any) -> None:
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def option_data(
    task: str,
    *,
    sampler: str | None,
    candidates: int,
    rerank: str | None,
    refine: str | None,
    overrides: tuple[str, ...],
    seed: int,
    batch_size: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The command line as GenerateOptions data (task-keyed where the stage's are) and the task's options."""
    from .recipe import parse_override

    options: dict[str, Any] = {"seed": seed, "batch_size": batch_size, "candidates": {task: candidates}}
    task_options: dict[str, Any] = {"use": task}
    if sampler is not None:
        options["sampler"] = {"use": sampler}
    if rerank is not None:
        options["rerank"] = {task: {"use": rerank}}
    if refine is not None:
        options["refine"] = {task: {"use": refine}}
    for text in overrides:
        parts, value = parse_override(text)
        head = parts[0]
        if head == "task":
            _set(task_options, parts[1:], value)
        elif head in ("rerank", "refine"):
            if head not in options:
                raise ValueError(f"--set {text}: give --{head} NAME first")
            _set(options[head][task], parts[1:], value)
        elif head == "sampler":
            options.setdefault("sampler", {"use": "maskgit"} if sampler is None else {"use": sampler})
            _set(options["sampler"], parts[1:], value)
        else:
            raise ValueError(f"--set {text}: paths start with sampler., rerank., refine. or task.")
    return options, task_options


def stage_inputs(
    run_dir: Path | None, stages: tuple[str, ...], needed: list[str], *, registry: Any, device: str
) -> Any:
    """StageInputs over the folders `needed` by key: `--stage KEY=DIR`, else the newest finished one in `--run`.

    Each folder is checked against the hashes recorded when its stage finished before anything reads it.
    """
    from .stage import StageInputs
    from .stage_folder import newest_finished, newest_model, verify

    given = {}
    for text in stages:
        key, sep, path = text.partition("=")
        if not sep or not key:
            raise ValueError(f"--stage {text!r}: expected KEY=DIR, e.g. train=runs/artefacts/train-1a2b")
        given[key] = Path(path)
    folders = {}
    for key in needed:
        if key in given:
            folders[key] = given[key]
        elif run_dir is not None and key == MODEL_STAGE:
            folders[key] = newest_model(run_dir, registry=registry)  # a fine-tuned model, if the run made one
        elif run_dir is not None:
            folders[key] = newest_finished(run_dir, key)
        else:
            raise ValueError(f"generation reads the {key!r} stage: give --run DIR or --stage {key}=DIR")
    uses = {key: verify(folder)["use"] for key, folder in folders.items()}
    return StageInputs(folders, uses=uses, registry=registry, device=device, reader="mmgen generate")


def command_line_prompts(
    task: Any, tokenizers: Any, *, texts: list[str], files: list[Path], count: int | None
) -> list[Any]:
    """Prompts from the command line: texts fill the task's variable-length input, files its other one.

    A single text or file is paired with every one of the other.
    """
    from .generation.task import Prompt

    given: dict[str, list[Any]] = {}
    for modality in task.needs:
        if tokenizers[modality].token_space.variable_length:
            if not texts:
                raise ValueError(f"task {task.name!r} needs a {modality} (--prompt or --prompts-file)")
            given[modality] = texts
        else:
            if not files:
                raise ValueError(f"task {task.name!r} needs an {modality} file (--image)")
            given[modality] = [tokenizers[modality].load_item(path.read_bytes()) for path in files]
    sizes = {len(v) for v in given.values()} - {1}
    if len(sizes) > 1:
        raise ValueError(f"got {', '.join(f'{len(v)} {m}' for m, v in given.items())}; give equal numbers, or one")
    n = max((len(v) for v in given.values()), default=count or 1)
    return [Prompt(key=f"{task.name}-{i:04d}", items={m: v[i % len(v)] for m, v in given.items()}) for i in range(n)]


@click.command("generate")
@click.option(
    "--task", "task_name", required=True, help="A registered generation task (t2i, i2t, ...: `mmgen plugins`)."
)
@click.option("--prompt", "prompts", multiple=True, help="A text prompt (repeatable).")
@click.option(
    "--prompts-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="One prompt per line."
)
@click.option(
    "--image",
    "files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An input file (an image) for tasks that take one (repeatable).",
)
@click.option(
    "--context",
    "context",
    multiple=True,
    type=(click.Path(exists=True, dir_okay=False, path_type=Path), str),
    metavar="IMAGE TEXT",
    help="A context pair for --task in_context: an image file and its caption (repeatable, in order).",
)
@click.option(
    "--region", default=None, metavar="TOP,LEFT,BOTTOM,RIGHT", help="Region tasks: the box, in image fractions."
)
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="How many outputs for tasks that take no input."
)
@click.option(
    "--run",
    "run_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A recipe workdir (newest finished stages).",
)
@click.option(
    "--stage", "stages", multiple=True, metavar="KEY=DIR", help="A finished stage folder, e.g. train=DIR (repeatable)."
)
@click.option("--sampler", default=None, help="A registered sampler (default: the model's own).")
@click.option("--candidates", type=click.IntRange(min=1), default=1, show_default=True, help="Candidates per prompt.")
@click.option("--rerank", default=None, help="The reranker that picks the best candidate (clip, cycle, ...).")
@click.option("--refine", default=None, help="A refiner run on the chosen outputs (caption_refine, ...).")
@click.option(
    "--set", "overrides", multiple=True, metavar="PATH=VALUE", help="e.g. sampler.fixed.steps=8, rerank.passes=1."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option(
    "--tracker", "tracker_name", default="mlflow", show_default=True, help="A registered tracker (mlflow, none)."
)
@click.option("--experiment", default="generate", show_default=True, help="MLflow experiment of the run.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Output folder.")
def generate(
    task_name, prompts, prompts_file, files, context, region, count, run_dir, stages, sampler, candidates, rerank,
    refine,
    overrides, seed, batch_size, device, tracker_name, experiment, out_dir,
):  # fmt: skip
    """Generate with a trained model: PNGs, a grid and generations.jsonl in --out (generations/<task>-seed<seed>)."""
    from .config import ConfigError, declared_inputs, structure_attrs, structure_spec
    from .generation.options import GenerateOptions, build_sampler, plan_tasks
    from .generation.pipeline import GenerationPipeline
    from .generation.regions import parse_box
    from .generation.store import publish
    from .registry import load_registry
    from .runner import flatten

    registry = load_registry()
    # Registered names use underscores; `--task in-context` means `in_context`.
    task_name = task_name.replace("-", "_")
    texts = list(prompts)
    if prompts_file is not None:
        texts += [line.strip() for line in prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        if region is not None:
            overrides = (*overrides, f"task.region={list(parse_box(region))}")
        data, task_data = option_data(
            task_name,
            sampler=sampler,
            candidates=candidates,
            rerank=rerank,
            refine=refine,
            overrides=overrides,
            seed=seed,
            batch_size=batch_size,
        )
        task_spec = structure_spec("tasks", task_data, path="--task", registry=registry)
        options = structure_attrs(GenerateOptions, data, registry=registry)
        options.check_tasks([task_name])
        tracker = registry.build(_tracker_spec(tracker_name, experiment, registry))
        needed = [MODEL_STAGE, TOKENIZERS_STAGE, *(key for _, key in declared_inputs(options))]
        inputs = stage_inputs(run_dir, stages, list(dict.fromkeys(needed)), registry=registry, device=device)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        raise UserError(f"mmgen generate: {_flag_message(exc)}") from None
    model, tokenizers = inputs.load(MODEL_STAGE), inputs.load(TOKENIZERS_STAGE)
    deps = {"model": model, "tokenizers": tokenizers, "inputs": inputs, "device": device}
    (plan,) = plan_tasks(options, [task_spec], registry=registry, deps=deps)
    if context or hasattr(plan.task, "with_context"):
        plan = attrs.evolve(plan, task=with_context(plan.task, tokenizers, list(context)))
    pipeline = GenerationPipeline(
        model=model,
        tokenizers=tokenizers,
        sampler=build_sampler(options, model=model, registry=registry),
        device=device,
    )
    try:
        task_prompts = command_line_prompts(plan.task, tokenizers, texts=texts, files=list(files), count=count)
        pipeline.check(
            plan.task, task_prompts, candidates=plan.candidates, reranker=plan.reranker, refiner=plan.refiner
        )
    except ValueError as exc:
        raise UserError(f"mmgen generate: {exc}") from None
    generations = pipeline.run(
        plan.task,
        task_prompts,
        candidates=plan.candidates,
        reranker=plan.reranker,
        refiner=plan.refiner,
        seed=seed,
        batch_size=batch_size,
    )
    out_dir = out_dir or Path("generations") / f"{task_name}-seed{seed}"
    jsonl = publish(generations, out_dir, tokenizers=tokenizers)
    for generation in generations:
        made = [v for v in generation.outputs.values() if isinstance(v, str)]
        click.echo("\t".join([generation.key, *made]))
    click.echo(f"wrote {jsonl} and grid-{task_name}.png in {out_dir}")
    _track(tracker, task=task_name, params={**flatten(data), **flatten({"task": task_data})}, out_dir=out_dir)


def with_context(task: Any, tokenizers: Any, pairs: list[tuple[Path, str]]) -> Any:
    """The task given the --context pairs (image file, caption), each encoded as one row."""
    if not hasattr(task, "with_context"):
        raise UserError(f"mmgen generate: task {task.name!r} takes no --context pairs (in_context does)")
    image, text = task.image, task.text
    encoded = []
    for path, caption in pairs:
        try:
            item = tokenizers[image].load_item(path.read_bytes())
        except Exception as exc:  # the tokenizer's own message, on one line
            raise UserError(f"mmgen generate: --context {path}: not a readable {image}: {exc}") from None
        items = item[None] if hasattr(item, "dim") else [item]  # a tensor item gets its batch dimension
        encoded.append({image: tokenizers[image].encode(items), text: tokenizers[text].encode([caption])})
    return task.with_context(encoded)


def _flag_message(exc: Exception) -> str:
    """Config paths as the flags that set them."""
    text = str(exc)
    if isinstance(exc, KeyError):
        text = exc.args[0]
    return text.replace("<root>: ", "")


def _tracker_spec(name: str, experiment: str, registry: Any) -> Any:
    from .config import structure_spec

    data = {"use": name, "experiment": experiment} if name == "mlflow" else {"use": name}
    return structure_spec("trackers", data, path="--tracker", registry=registry)


def _track(tracker: Any, *, task: str, params: dict[str, str], out_dir: Path) -> None:
    """One tracked run per command: its options as params, the output folder as artefacts."""
    tracker.start(run_name=f"generate-{task}", tags={"mmgen.command": "generate"})
    status = "FAILED"
    try:
        tracker.log_params({"task": task, **params})
        tracker.log_artifact(out_dir, artifact_path="generations")
        status = "FINISHED"
    finally:
        tracker.end(status=status)
