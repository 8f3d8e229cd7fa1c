"""A killed ingest, resumed, loses and duplicates nothing."""

import subprocess
import sys
import textwrap

import pytest

from ingest_helpers import write_corpus
from mmgen.plugins.datasets.ingest.dataset_source import dataset_candidates
from mmgen.plugins.datasets.ingest.folder import folder_candidates
from mmgen.plugins.datasets.ingest.pipeline import ingest
from mmgen.plugins.datasets.lmdb_store import LmdbStore
from mmgen.plugins.datasets.shapes.dataset import ShapesDataset
from mmgen.plugins.datasets.store_verify import verify_store

# Ingests the folder corpus and SIGKILLs itself when the candidate generator reaches item `kill_at`:
# committed batches survive, the pending one is lost mid-write, as in a real crash.
KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from mmgen.plugins.datasets.ingest.folder import folder_candidates
    from mmgen.plugins.datasets.ingest.pipeline import ingest

    def candidates():
        folder = Path({folder!r})
        for position, item in enumerate(folder_candidates(folder, folder / "captions.jsonl")):
            if position == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)
            yield item

    ingest(candidates(), Path({store!r}), commit_every={commit_every}, progress=False)
    """
)


def killed_ingest(tmp_path, *, folder, kill_at, commit_every):
    store = str(tmp_path / "killed.lmdb")
    script = KILLED_RUN.format(folder=str(folder), kill_at=kill_at, store=store, commit_every=commit_every)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()


def records_of(path):
    store = LmdbStore(path)
    return [store[i] for i in range(len(store))], dict(store.issues()), store.header


def test_interrupted_shapes_ingest_keeps_what_it_handled_and_resumes(tmp_path):
    data = ShapesDataset(size=32, counts={"train": 60})

    def interrupted():
        for position, item in enumerate(dataset_candidates(data, "train")):
            if position == 27:
                raise KeyboardInterrupt
            yield item

    with pytest.raises(KeyboardInterrupt):
        ingest(interrupted(), tmp_path / "killed.lmdb", commit_every=8, progress=False)
    assert len(LmdbStore(tmp_path / "killed.lmdb")) == 27  # the pending batch is committed on the way out
    resumed = ingest(dataset_candidates(data, "train"), tmp_path / "killed.lmdb", progress=False)
    assert (resumed.already_present, resumed.new, resumed.records) == (27, 33, 60)
    ingest(dataset_candidates(data, "train"), tmp_path / "whole.lmdb", progress=False)
    assert records_of(tmp_path / "killed.lmdb") == records_of(tmp_path / "whole.lmdb")
    assert verify_store(tmp_path / "killed.lmdb").ok


def test_killed_broken_folder_ingest_resumes_exactly(tmp_path):
    write_corpus(tmp_path / "images")
    killed_ingest(tmp_path, folder=tmp_path / "images", kill_at=13, commit_every=4)
    header = LmdbStore(tmp_path / "killed.lmdb").header
    assert header["count"] + header["issues"]["skipped"] == 12  # three commits of 4; the 13th item was lost
    candidates = folder_candidates(tmp_path / "images", tmp_path / "images" / "captions.jsonl")
    resumed = ingest(candidates, tmp_path / "killed.lmdb", progress=False)
    assert (resumed.already_present, resumed.new) == (12, 9)
    whole = ingest(candidates, tmp_path / "whole.lmdb", progress=False)
    assert records_of(tmp_path / "killed.lmdb") == records_of(tmp_path / "whole.lmdb")
    assert (resumed.records, resumed.fixed, resumed.skipped) == (whole.records, whole.fixed, whole.skipped)
    assert resumed.skip_reasons == whole.skip_reasons and resumed.fix_reasons == whole.fix_reasons
