"""Data plugin: the shapes, shapes_vqa and lmdb datasets, the shapes_accuracy metric, the data and cache
stages, and the `mmgen data` command. Imports happen inside the hooks, so loading stays light."""

from mmgen.api import hookimpl


@hookimpl
def register_datasets(register):
    from .lmdb_dataset import LmdbDataset
    from .shapes.dataset import ShapesDataset
    from .shapes_episodes.dataset import ShapesEpisodesDataset
    from .shapes_vqa.dataset import ShapesVqaDataset

    register(ShapesDataset)
    register(ShapesVqaDataset)
    register(ShapesEpisodesDataset)
    register(LmdbDataset)


@hookimpl
def register_metrics(register):
    from .shapes.metric import ShapesAccuracy

    register(ShapesAccuracy)


@hookimpl
def register_stages(register):
    from .cache_stage import CacheStage
    from .data_stage import DataStage

    register(DataStage)
    register(CacheStage)


@hookimpl
def register_commands(cli):
    from .cli import ingest_group, register_commands as add
    from .ingest.vqav2_command import ingest_vqav2

    ingest_group.add_command(ingest_vqav2)
    add(cli)
