"""mmgen-audio's hooks. Only mmgen.api at the top; components load inside the hooks, so listing plugins stays light."""

from mmgen.api import hookimpl


@hookimpl
def register_datasets(register):
    from .dataset import SoundsDataset
    from .scene_sounds import SceneSoundsDataset

    register(SoundsDataset)
    register(SceneSoundsDataset)


@hookimpl
def register_tokenizers(register):
    from .tokenizer import AudioTokenizer

    register(AudioTokenizer)


@hookimpl
def register_tasks(register):
    from .tasks import TASKS

    for task in TASKS:
        register(task)


@hookimpl
def register_metrics(register):
    from .metric import AudioAccuracy

    register(AudioAccuracy)
