"""The generation task names, importable without torch (CLI choices, config validation)."""

TASK_NAMES = ("t2i", "i2t", "inpaint", "outpaint", "t2t", "it2i", "it2t", "t2it", "unconditional")
