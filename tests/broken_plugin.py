"""A plugin that fails on import, as a broken third-party install would."""

raise ImportError("this plugin is broken on purpose")
