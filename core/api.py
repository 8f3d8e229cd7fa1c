"""The public API of mmgen: everything a plugin author imports, from one place.

    from mmgen.api import hookimpl, Segment, TokenSpace, GenerationRequest

Built-in plugins import the core only from here (import-linter checks it in
the test suite), so what works for them works for a third-party package.
Names load on first use: `import mmgen.api` stays light (no torch), so a
plugin's registration module can import it at the top. docs/plugins.md
documents every hook and kind.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> (core module, attribute)
_EXPORTS: dict[str, tuple[str, str]] = {
    # hooks
    "hookimpl": ("hookspecs", "hookimpl"),
    "DEPS": ("hookspecs", "DEPS"),
    "__version__": ("version", "__version__"),
    # component protocols
    "Component": ("protocols", "Component"),
    "Tokenizer": ("protocols", "Tokenizer"),
    "Model": ("protocols", "Model"),
    "LengthPredictor": ("protocols", "LengthPredictor"),
    "Objective": ("protocols", "Objective"),
    "ObjectiveOutput": ("protocols", "ObjectiveOutput"),
    "StepInput": ("protocols", "StepInput"),
    "Sampler": ("protocols", "Sampler"),
    "GenerationRequest": ("protocols", "GenerationRequest"),
    "RequestSegment": ("protocols", "RequestSegment"),
    "Reranker": ("protocols", "Reranker"),
    "Refiner": ("protocols", "Refiner"),
    "Dataset": ("protocols", "Dataset"),
    "Metric": ("protocols", "Metric"),
    "Tracker": ("protocols", "Tracker"),
    "Stage": ("stage", "Stage"),
    "StageContext": ("stage", "StageContext"),
    "StageInputs": ("stage", "StageInputs"),
    "GenerationTask": ("generation.task", "GenerationTask"),
    # configs: fields, validators, structuring
    "Spec": ("config", "Spec"),
    "component": ("config", "component"),
    "components": ("config", "components"),
    "optional_component": ("config", "optional_component"),
    "component_map": ("config", "component_map"),
    "upstream": ("config", "upstream"),
    "declared_inputs": ("config", "declared_inputs"),
    "structure": ("config", "structure"),
    "structure_attrs": ("config", "structure_attrs"),
    "structure_spec": ("config", "structure_spec"),
    "to_data": ("config", "to_data"),
    "positive": ("validators", "positive"),
    "non_negative": ("validators", "non_negative"),
    "probability": ("validators", "probability"),
    "positive_or_none": ("validators", "positive_or_none"),
    "positive_values": ("validators", "positive_values"),
    "existing_file": ("validators", "existing_file"),
    "existing_dir": ("validators", "existing_dir"),
    "FieldError": ("validators", "FieldError"),
    # data
    "Record": ("batch", "Record"),
    "Segment": ("batch", "Segment"),
    "TokenBatch": ("batch", "TokenBatch"),
    "Generation": ("batch", "Generation"),
    "Task": ("task", "Task"),
    # token spaces and sequence layout
    "TokenSpace": ("token_space", "TokenSpace"),
    "JointTokenSpace": ("token_space", "JointTokenSpace"),
    "BOC": ("token_space", "BOC"),
    "BOG": ("token_space", "BOG"),
    "begin_token": ("token_space", "begin_token"),
    "mask_token": ("token_space", "mask_token"),
    "Part": ("layout", "Part"),
    "Span": ("layout", "Span"),
    "Packed": ("layout", "Packed"),
    "pack": ("layout", "pack"),
    "SPECIALS_TABLE": ("layout", "SPECIALS_TABLE"),
    # generation
    "Prompt": ("generation.task", "Prompt"),
    "TaskBase": ("generation.task", "TaskBase"),
    "given": ("generation.task", "given"),
    "known": ("generation.task", "known"),
    "blank": ("generation.task", "blank"),
    "region_target": ("generation.task", "region_target"),
    "partial_text": ("generation.task", "partial_text"),
    "TrainedLayouts": ("generation.layouts", "TrainedLayouts"),
    "TRAINED_LAYOUTS_KEY": ("generation.layouts", "RECORD_KEY"),
    "GenerationPipeline": ("generation.pipeline", "GenerationPipeline"),
    "best_in_groups": ("generation.pipeline", "best_in_groups"),
    "GenerateOptions": ("generation.options", "GenerateOptions"),
    "build_sampler": ("generation.options", "build_sampler"),
    "plan_tasks": ("generation.options", "plan_tasks"),
    "Box": ("generation.regions", "Box"),
    "CENTRE": ("generation.regions", "CENTRE"),
    "box_mask": ("generation.regions", "box_mask"),
    "check_box": ("generation.regions", "check_box"),
    "parse_box": ("generation.regions", "parse_box"),
    "Cell": ("generation.grid", "Cell"),
    "generation_cell": ("generation.grid", "generation_cell"),
    "render_grid": ("generation.grid", "render_grid"),
    "is_picture": ("generation.grid", "is_picture"),
    "save_generations": ("generation.store", "save_generations"),
    "load_generations": ("generation.store", "load_generations"),
    "publish": ("generation.store", "publish"),
    "media_files": ("generation.store", "media_files"),
    "png_bytes": ("generation.store", "png_bytes"),
    "GuidanceOptions": ("guidance", "GuidanceOptions"),
    "guidance_weight": ("guidance", "guidance_weight"),
    "guide": ("guidance", "guide"),
    "drop_condition": ("guidance", "drop_condition"),
    # training
    "Trainer": ("trainer", "Trainer"),
    "TrainerConfig": ("trainer", "TrainerConfig"),
    "StepResult": ("trainer", "StepResult"),
    "load_checkpoint": ("checkpoint", "load"),
    "env_world": ("distributed", "env_world"),
    "epoch_permutation": ("data_stream", "epoch_permutation"),
    "rank_share": ("data_stream", "rank_share"),
    # training memory on paper (`mmgen estimate`)
    "TrainingShape": ("memory_estimate", "TrainingShape"),
    "Tower": ("memory_estimate", "Tower"),
    "Logits": ("memory_estimate", "Logits"),
    "MemoryRow": ("memory_estimate", "MemoryRow"),
    "estimate_memory": ("memory_estimate", "estimate"),
    "estimate_memory_all": ("memory_estimate", "estimate_all"),
    # long work
    "progress": ("progress", "progress"),
    # files
    "atomic_write_bytes": ("atomic", "atomic_write_bytes"),
    "atomic_write_text": ("atomic", "atomic_write_text"),
    "atomic_writer": ("atomic", "atomic_writer"),
    # finished stage folders and --set values, for plugins that add commands
    "newest_finished": ("stage_folder", "newest_finished"),
    "newest_model": ("stage_folder", "newest_model"),
    "verify_stage_folder": ("stage_folder", "verify"),
    "parse_override": ("recipe", "parse_override"),
    "load_recipe": ("recipe", "load_recipe"),
    # the registry, for plugins that add commands
    "load_registry": ("registry", "load_registry"),
    "Registry": ("registry", "Registry"),
    "KINDS": ("registry", "KINDS"),
    # errors
    "UserError": ("errors", "UserError"),
    "ArtefactError": ("errors", "ArtefactError"),
    "MissingSplitError": ("errors", "MissingSplitError"),
    "ConfigError": ("config", "ConfigError"),
    "RecipeError": ("recipe", "RecipeError"),
    "PluginError": ("registry", "PluginError"),
    "UnknownComponentError": ("registry", "UnknownComponentError"),
    "TrackerUnavailable": ("protocols", "TrackerUnavailable"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"mmgen.api has no {name!r}") from None
    value = getattr(importlib.import_module(f"mmgen.{module}"), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
