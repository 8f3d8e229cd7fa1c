"""Every finished stage folder records the sha256 of its files; readers and `mmgen verify` check them."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from click.testing import CliRunner
from mmgen.api import ArtefactError
from mmgen.checkpoint import CheckpointDir
from mmgen.cli import main
from mmgen.recipe import load_recipe
from mmgen.runner import run_recipe
from mmgen.stage_folder import mark_done, read_done, verify
from registry_helpers import ToyStage, toy_registry

REGISTRY = toy_registry()


def flip_byte(path, index=0):
    data = bytearray(path.read_bytes())
    data[index] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def finished(tmp_path):
    folder = tmp_path / "artefacts" / "train-abc"
    (folder / "sub").mkdir(parents=True)
    (folder / "weights.pt").write_bytes(b"weights")
    (folder / "sub" / "data.mdb").write_bytes(b"records")
    (folder / "sub" / "lock.mdb").write_bytes(b"reader table")  # LMDB rewrites it on every open
    (folder / ".train.lock").write_text("123")
    mark_done(folder, key="train", use="train", digest="abc", seconds=1.0)
    return folder


def test_done_records_the_hash_of_every_artefact_file(finished):
    files = read_done(finished)["files"]
    assert sorted(files) == ["sub/data.mdb", "weights.pt"]
    assert files["weights.pt"] == hashlib.sha256(b"weights").hexdigest()
    assert files["sub/data.mdb"] == hashlib.sha256(b"records").hexdigest()
    assert verify(finished)["hash"] == "abc"
    (finished / "sub" / "lock.mdb").write_bytes(b"another reader")  # not part of the artefact
    verify(finished)


def test_a_changed_byte_is_one_error_naming_the_file(finished):
    flip_byte(finished / "weights.pt")
    with pytest.raises(ArtefactError) as info:
        verify(finished)
    assert str(info.value) == (
        f"{finished / 'weights.pt'}: content does not match its recorded sha256 (corrupt or altered); "
        "re-run its stage with `mmgen run RECIPE --force` (or delete the folder), or restore the file"
    )


def test_a_missing_file_and_an_unreadable_record_are_errors(finished):
    (finished / "sub" / "data.mdb").unlink()
    with pytest.raises(ArtefactError, match=re.escape(f"{finished / 'sub' / 'data.mdb'}: missing")):
        verify(finished)
    (finished / "DONE.json").write_bytes(b'{"stage": "tr\xff')
    with pytest.raises(ArtefactError, match=re.escape(f"{finished / 'DONE.json'}: unreadable")):
        verify(finished)


def test_a_folder_without_hashes_is_refused_until_recorded(finished):
    done = read_done(finished)
    del done["files"]
    (finished / "DONE.json").write_text(json.dumps(done))
    with pytest.raises(ArtefactError, match=re.escape(f"record them with `mmgen verify --record {finished}`")):
        verify(finished)
    result = CliRunner().invoke(main, ["verify", str(finished)])
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith("unverifiable train-abc  ")
    result = CliRunner().invoke(main, ["verify", "--record", str(finished)])
    assert result.exit_code == 0 and result.output == "recorded     train-abc  hashes of 2 files recorded\n"
    assert verify(finished)["files"].keys() == {"sub/data.mdb", "weights.pt"}


def test_mmgen_verify_checks_a_whole_run(tmp_path):
    recipe_file = tmp_path / "toy.yaml"
    recipe_file.write_text(
        f"name: toy\nworkdir: {tmp_path / 'runs'}\ntracker: {{use: none}}\n"
        "stages:\n  first: {use: toy_stage, value: 1}\n  second: {use: toy_stage, value: 2, reads: first}\n"
    )
    first, second = run_recipe(load_recipe(recipe_file, registry=REGISTRY), registry=REGISTRY)
    # An interrupted third stage with two checkpoints.
    checkpoints = CheckpointDir(tmp_path / "runs" / "artefacts" / "third-xyz" / "checkpoints", keep_last=None)
    checkpoints.save(1, {"step": 1})
    checkpoints.save(2, {"step": 2})

    result = CliRunner().invoke(main, ["verify", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"ok           {first.out_dir.name}  1 files match",
        f"ok           {second.out_dir.name}  1 files match",
        "unfinished   third-xyz  not marked done; 2 hashed files (checkpoints) match",
    ]

    flip_byte(second.out_dir / "value.txt")
    flip_byte(checkpoints.path(2), index=100)
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "runs")])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"ok           {first.out_dir.name}  1 files match"
    assert lines[1].startswith(
        f"corrupt      {second.out_dir.name}  {second.out_dir / 'value.txt'}: content does not match"
    )
    assert lines[2].startswith(
        f"corrupt      third-xyz  {checkpoints.path(2)}: content does not match step-00000002.pt.sha256"
    )
    assert lines[3] == "2 stage folder(s) failed verification"


def test_the_runner_checks_a_stages_inputs_before_running_it(tmp_path):
    recipe_file = tmp_path / "toy.yaml"
    recipe_file.write_text(
        f"name: toy\nworkdir: {tmp_path / 'runs'}\ntracker: {{use: none}}\n"
        "stages:\n  first: {use: toy_stage, value: 1}\n  second: {use: toy_stage, value: 2, reads: first}\n"
    )
    first, _ = run_recipe(load_recipe(recipe_file, registry=REGISTRY), registry=REGISTRY)
    flip_byte(first.out_dir / "value.txt")
    ToyStage.runs.clear()
    changed = load_recipe(recipe_file, registry=REGISTRY, overrides=["second.value=3"])
    with pytest.raises(ArtefactError, match=re.escape(f"{first.out_dir / 'value.txt'}: content does not match")):
        run_recipe(changed, registry=REGISTRY)
    assert ToyStage.runs == []  # the corrupt input was never read
