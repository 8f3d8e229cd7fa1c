from mmgen.api import hookimpl


@hookimpl
def register_tasks(register):
    from . import builtin, in_context, vqa  # imported here: loading plugins must not import torch

    for task in (*builtin.TASKS, vqa.VisualQuestionAnswering, in_context.InContext):
        register(task)
