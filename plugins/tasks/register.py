from mmgen.api import hookimpl


@hookimpl
def register_tasks(register):
    from . import builtin, vqa  # imported here: loading plugins must not import torch

    for task in (*builtin.TASKS, vqa.VisualQuestionAnswering):
        register(task)
