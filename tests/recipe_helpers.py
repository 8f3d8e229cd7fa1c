"""A tiny valid recipe that bad-recipe tests break on purpose (tests/test_recipe_errors.py, test_recipe_fuzz.py)."""

TINY = """\
name: tiny
device: cpu
tracker: {use: mlflow, experiment: tiny}
stages:
  data:
    dataset: {use: shapes, size: 32, max_objects: 1, train: 8, val: 4, test: 4, holdout: 0}
  tokenizers:
    tokenizers:
      - {use: vqgan, preset: tiny, train: {steps: 2, batch_size: 4, warmup_steps: 1}}
      - {use: sentencepiece_bpe, vocab_size: 64, max_length: 16}
  cache: {}
  train:
    model: {use: magvlt, preset: tiny}
    trainer: {steps: 2, batch_size: 4, warmup_steps: 1}
"""
