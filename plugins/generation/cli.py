"""`mmgen generate`: run one generation task with a trained run's artefacts."""

from __future__ import annotations

from pathlib import Path

import click

from .task_names import TASK_NAMES


def _read_prompts(prompts: tuple[str, ...], prompts_file: Path | None) -> list[str]:
    texts = list(prompts)
    if prompts_file is not None:
        texts += [line.strip() for line in prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts


def _sampler_spec(name: str, overrides: tuple[str, ...], registry):
    from mmgen.config import structure_spec
    from mmgen.recipe import parse_override

    data: dict = {"use": name}
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return structure_spec("samplers", data, path="sampler", registry=registry)


def _stage_dir(explicit: Path | None, run_dir: Path | None, stage: str, *, required: bool = True) -> Path | None:
    from .artefacts import latest_artefact

    if explicit is not None:
        return explicit
    if run_dir is None:
        if required:
            raise click.UsageError(f"give --{'model' if stage == 'train' else stage} or --run")
        return None
    try:
        return latest_artefact(run_dir, stage)
    except FileNotFoundError:
        if required:
            raise
        return None


@click.command("generate")
@click.option("--task", "task", type=click.Choice(TASK_NAMES), required=True, help="Which generation task.")
@click.option("--prompt", "prompts", multiple=True, help="A text prompt (repeatable).")
@click.option(
    "--prompts-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="One prompt per line."
)
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An input image file (repeatable).",
)
@click.option(
    "--region",
    default=None,
    metavar="TOP,LEFT,BOTTOM,RIGHT",
    help="Box in image fractions: regenerated (inpaint, it2i) or kept (outpaint). Default: the centre half.",
)
@click.option("--count", type=int, default=None, help="How many pairs for the unconditional task.")
@click.option(
    "--run",
    "run_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A recipe workdir; its newest finished tokenizers, train and clip stages are used.",
)
@click.option(
    "--tokenizers",
    "tokenizers_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The tokenizers stage folder.",
)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The train stage folder.",
)
@click.option(
    "--clip",
    "clip_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A clip stage folder (needed for --candidates > 1).",
)
@click.option("--candidates", type=int, default=1, show_default=True, help="Candidates per prompt, reranked.")
@click.option(
    "--rerank",
    type=click.Choice(["clip", "cycle"]),
    default="clip",
    show_default=True,
    help="Reranker of candidates: CLIP, or (i2t) the model's own log p(image | caption).",
)
@click.option(
    "--refine/--no-refine",
    default=False,
    show_default=True,
    help="i2t: refine each caption word by word against log p(image | caption).",
)
@click.option(
    "--cycle-passes",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Interleaved image masks the cycle score sums over (1: whole image; 2: checkerboard, sharper, 2x cost).",
)
@click.option("--sampler", "sampler_name", default="maskgit", show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Sampler option, e.g. fixed.steps=8.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option(
    "--tracker",
    "tracker_name",
    default="mlflow",
    show_default=True,
    help="Where the outputs are logged (a registered tracker: mlflow, none, ...).",
)
@click.option("--experiment", default="generate", show_default=True, help="MLflow experiment of the run.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default: generations/<task>-seed<seed>).",
)
def generate(
    task,
    prompts,
    prompts_file,
    images,
    region,
    count,
    run_dir,
    tokenizers_dir,
    model_dir,
    clip_dir,
    candidates,
    rerank,
    refine,
    cycle_passes,
    sampler_name,
    overrides,
    seed,
    batch_size,
    device,
    tracker_name,
    experiment,
    out_dir,
):
    """Generate with a trained model: PNGs, a grid and generations.jsonl in --out."""
    from mmgen.config import ConfigError
    from mmgen.registry import load_registry

    from .artefacts import load_for_generation
    from .caption_refine import CaptionRefiner
    from .cycle_score import CycleReranker
    from .prompts import command_line_prompts
    from .refine_config import RefineConfig
    from .regions import parse_box
    from .store import publish
    from .tasks import TaskRunner

    registry = load_registry()
    try:
        tracker = registry.build(_tracker_spec(tracker_name, experiment, registry))
        sampler = registry.build(_sampler_spec(sampler_name, overrides, registry))
        box = parse_box(region) if region else None
        if task != "i2t" and (rerank == "cycle" or refine):
            raise ValueError(f"--rerank cycle and --refine work on i2t captions, not {task}")
    except (ConfigError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    loaded = load_for_generation(
        tokenizers_dir=_stage_dir(tokenizers_dir, run_dir, "tokenizers"),
        model_dir=_stage_dir(model_dir, run_dir, "train"),
        clip_dir=_stage_dir(clip_dir, run_dir, "clip", required=candidates > 1 and rerank == "clip"),
        registry=registry,
        device=device,
    )
    image_tokenizer = loaded.tokenizers.get("image")
    items = [image_tokenizer.load_item(path.read_bytes()) for path in images] if images else []
    try:
        task_prompts = command_line_prompts(
            task, texts=_read_prompts(prompts, prompts_file), images=items, count=count, region=box
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    cycle = CycleReranker(loaded.model, passes=cycle_passes)
    runner = TaskRunner(
        model=loaded.model,
        tokenizers=loaded.tokenizers,
        sampler=sampler,
        reranker=loaded.reranker,
        rerankers={"i2t": cycle} if rerank == "cycle" else None,
        refiners={"i2t": CaptionRefiner(loaded.model, config=RefineConfig(), scorer=cycle)} if refine else None,
        device=device,
    )
    generations = runner.run(task, task_prompts, candidates=candidates, seed=seed, batch_size=batch_size)
    out_dir = out_dir or Path("generations") / f"{task}-seed{seed}"
    jsonl = publish(generations, out_dir)
    for generation in generations:
        text = generation.outputs.get("text")
        click.echo(f"{generation.key}\t{text}" if text is not None else generation.key)
    click.echo(f"wrote {jsonl} and grid-{task}.png in {out_dir}")
    options = {"candidates": candidates, "rerank": rerank, "refine": refine}
    if rerank == "cycle" or refine:
        options["cycle_passes"] = cycle_passes
    _track(tracker, task=task, seed=seed, options=options, overrides=overrides, out_dir=out_dir)


def _tracker_spec(name: str, experiment: str, registry):
    from mmgen.config import structure_spec

    data = {"use": name, "experiment": experiment} if name == "mlflow" else {"use": name}
    return structure_spec("trackers", data, path="--tracker", registry=registry)


def _track(tracker, *, task: str, seed: int, options: dict, overrides: tuple[str, ...], out_dir: Path) -> None:
    """One tracked run per command: its options as params, the output folder as artefacts."""
    tracker.start(run_name=f"generate-{task}", tags={"mmgen.command": "generate"})
    status = "FAILED"
    try:
        tracker.log_params({"task": task, "seed": seed, **options, **dict(o.split("=", 1) for o in overrides)})
        tracker.log_artifact(out_dir, artifact_path="generations")
        status = "FINISHED"
    finally:
        tracker.end(status=status)


def register_commands(cli: click.Group) -> None:
    cli.add_command(generate)
