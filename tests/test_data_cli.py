"""`mmgen data ingest / show / verify` end to end, through the real CLI and plugin registry."""

import io

import numpy as np
from click.testing import CliRunner
from PIL import Image

from ingest_helpers import write_corpus
from mmgen.cli import main
from mmgen.plugins.datasets.lmdb_store import LmdbStore, close_environment, environment, record_slot


def run(*args):
    result = CliRunner().invoke(main, ["-q", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_ingest_shapes_show_and_verify(tmp_path):
    code, out = run(
        "data",
        "ingest",
        "dataset",
        "shapes",
        "--out-dir",
        str(tmp_path),
        "--split",
        "train",
        "--set",
        "size=32",
        "--set",
        "train=6",
    )
    assert code == 0, out
    assert f"{tmp_path / 'train.lmdb'}: 6 records (0 fixed), 0 skipped" in out
    assert "this run: 6 items handled, 0 already present" in out

    code, out = run("data", "show", str(tmp_path / "train.lmdb"), "--sheet", str(tmp_path / "sheet.png"))
    assert code == 0
    assert "records   6\n  image   6\ncaptions  30\nfixed     0\nskipped   0\n" in out
    sheet = np.asarray(Image.open(tmp_path / "sheet.png"))
    assert sheet.shape[1] == 4 * (128 + 4) + 4  # four 128 px tiles and their gutters
    first = np.asarray(Image.open(io.BytesIO(LmdbStore(tmp_path / "train.lmdb")[0].data)))
    assert np.array_equal(sheet[4:132, 4:132], first.repeat(4, axis=0).repeat(4, axis=1))

    code, out = run("data", "verify", str(tmp_path / "train.lmdb"))
    assert (code, out) == (0, f"{tmp_path / 'train.lmdb'}: ok (6 records)\n")
    env = environment(tmp_path / "train.lmdb", write=True)
    with env.begin(write=True) as txn:
        value = bytearray(txn.get(record_slot(4)))
        value[-5] ^= 1
        txn.put(record_slot(4), bytes(value))
    close_environment(tmp_path / "train.lmdb")
    code, out = run("data", "verify", str(tmp_path / "train.lmdb"))
    assert code == 1
    assert out == f"{tmp_path / 'train.lmdb'}: FAILED\n  record 4 ('train-0000004'): checksum mismatch\n"


def test_ingest_folder_prints_exact_counts_and_resumes(tmp_path):
    captions = write_corpus(tmp_path / "images")
    args = (
        "data",
        "ingest",
        "folder",
        str(tmp_path / "images"),
        "--captions",
        str(captions),
        "--out",
        str(tmp_path / "s.lmdb"),
    )
    code, out = run(*args)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{tmp_path / 's.lmdb'}: 10 records (8 fixed), 11 skipped"
    assert "       2  not an image" in lines and "       1  too many pixels" in lines
    code, out = run(*args)
    assert out.splitlines()[1] == "this run: 0 items handled, 21 already present"


def test_ingest_dataset_errors_are_reported_not_raised(tmp_path):
    code, out = run("data", "ingest", "dataset", "shapez", "--out-dir", str(tmp_path))
    assert code == 1 and "no dataset named 'shapez'; did you mean 'shapes'?" in out
    code, out = run("data", "ingest", "dataset", "shapes", "--out-dir", str(tmp_path), "--set", "colour=red")
    assert code == 1 and "shapes.colour" in out
    code, out = run(
        "data", "ingest", "dataset", "shapes", "--out-dir", str(tmp_path), "--split", "nope", "--set", "train=1"
    )
    assert code == 1 and "dataset 'shapes' has no split 'nope'" in out
