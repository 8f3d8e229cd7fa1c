from mmgen.api import hookimpl


@hookimpl
def register_trackers(register):
    from .mlflow_tracker import MlflowTracker
    from .none_tracker import NoneTracker

    register(MlflowTracker)
    register(NoneTracker)
