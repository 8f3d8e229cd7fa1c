"""`mmgen serve`'s JSON API through FastAPI's test client, on a tiny trained run.

Good requests make what `mmgen generate` makes (same prompt, seed and sampler: the same pixels and
captions) and show each refinement step; bad ones get one clear 4xx answer and queue nothing; a full
queue answers 503 with Retry-After and loses nothing; the command binds loopback unless told otherwise.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from pathlib import Path

import attrs
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from fastapi.testclient import TestClient
from PIL import Image

from generation_helpers import one_thread  # noqa: F401 (an autouse fixture)
from mmgen.cli import main
from mmgen.plugins.serve import app as app_module
from mmgen.plugins.serve.app import create_app
from mmgen.plugins.serve.command import sampler_data
from mmgen.plugins.serve.engine import Engine, Frame, Result
from mmgen.registry import load_registry
from serve_helpers import finished, picture_png, tiny_run

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a small red circle in the center"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def engine(run_dir) -> Engine:
    return Engine(run_dir, registry=load_registry())


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve-out")


@pytest.fixture(scope="module")
def client(engine, out_dir):
    with TestClient(create_app(engine, out_dir=out_dir)) as client:
        yield client


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def generate(run_dir: Path, out: Path, *args: str) -> list[dict]:
    """`mmgen generate` of the same run; its generations.jsonl rows."""
    result = CliRunner().invoke(
        main, ["generate", "--run", str(run_dir), "--tracker", "none", "--out", str(out), *args]
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]


def submit(client, url: str, **kwargs) -> dict:
    answer = client.post(url, **kwargs)
    assert answer.status_code == 202, answer.text
    assert answer.headers["location"] == f"/api/jobs/{answer.json()['id']}"
    return finished(client, answer.json()["id"])


def test_text_to_image_shows_each_step_and_makes_what_generate_makes(client, run_dir, out_dir, tmp_path):
    job = submit(client, "/api/t2i", json={"prompt": PROMPT, "candidates": 2, "steps": 3, "seed": 5})
    assert (job["status"], job["progress"], job["error"]) == ("done", 1.0, None)
    assert [(f["step"], f["steps"], f["modality"]) for f in job["frames"]] == [
        (1, 3, "image"),
        (2, 3, "image"),
        (3, 3, "image"),
    ]
    assert [f["files"] for f in job["frames"]] == [[f"step-00{i}-0.png", f"step-00{i}-1.png"] for i in range(3)]
    assert job["result"] == {"files": ["output-0.png", "output-1.png"], "texts": []}
    answers = [client.get(job["files"] + name) for name in job["result"]["files"]]
    assert [a.headers["content-type"] for a in answers] == ["image/png", "image/png"]
    served = [pixels(a.content) for a in answers]
    rows = generate(
        run_dir,
        tmp_path / "gen",
        "--task",
        "t2i",
        "--prompt",
        PROMPT,
        "--prompt",
        PROMPT,
        "--seed",
        "5",
        "--set",
        "sampler.fixed.steps=3",
    )
    expected = [pixels((tmp_path / "gen" / row["outputs"]["image"]["png"]).read_bytes()) for row in rows]
    assert all(np.array_equal(s, e) for s, e in zip(served, expected, strict=True))
    # The last step has every token fixed: its frame is the output.
    last = [pixels(client.get(job["files"] + name).content) for name in job["frames"][-1]["files"]]
    assert all(np.array_equal(a, b) for a, b in zip(last, served))
    # The job's folder holds what `mmgen generate` writes.
    folder = out_dir / f"t2i-{job['id']}"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.*")) == sorted(
        p.relative_to(tmp_path / "gen").as_posix() for p in (tmp_path / "gen").rglob("*.*")
    )


def test_image_to_text_captions_an_upload_as_generate_does(client, run_dir, tmp_path):
    upload = picture_png()
    job = submit(client, "/api/i2t", files={"image": ("x.png", upload, "image/png")}, data={"steps": "3"})
    assert job["status"] == "done" and len(job["result"]["texts"]) == 1 and job["result"]["files"] == []
    assert [(f["step"], f["modality"], len(f["texts"])) for f in job["frames"]] == [(i, "text", 1) for i in (1, 2, 3)]
    (tmp_path / "in.png").write_bytes(upload)
    rows = generate(
        run_dir,
        tmp_path / "gen",
        "--task",
        "i2t",
        "--image",
        str(tmp_path / "in.png"),
        "--set",
        "sampler.variable.steps=3",
    )
    assert job["result"]["texts"] == [rows[0]["outputs"]["text"]]


@pytest.mark.parametrize("caption, task", [("", "inpaint"), ("a small blue square in the center", "it2i")])
def test_inpainting_runs_inpaint_or_with_a_caption_it2i(client, out_dir, caption, task):
    form = {"region": "0,0,0.5,0.5", "caption": caption, "steps": "2"}
    job = submit(client, "/api/inpaint", files={"image": ("x.png", picture_png(), "image/png")}, data=form)
    assert job["status"] == "done" and job["result"]["files"] == ["output-0.png"]
    assert (out_dir / f"inpaint-{job['id']}" / f"grid-{task}.png").is_file()
    row = json.loads((out_dir / f"inpaint-{job['id']}" / "generations.jsonl").read_text())
    assert row["inputs"]["region"] == [0.0, 0.0, 0.5, 0.5]
    assert any(f["modality"] == "image" for f in job["frames"])


def test_info_gives_the_tasks_the_runs_sampler_settings_and_the_limits(client):
    info = client.get("/api/info").json()
    assert info["tasks"] == ["t2i", "i2t", "inpaint"]
    assert info["defaults"] == {"sampler": "maskgit", "image_steps": 10, "text_steps": 12, "guidance": 0.0}
    assert info["limits"]["prompt_chars"] == 300 and info["limits"]["body_bytes"] == 1_000_000


def test_the_openapi_spec_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {
        "/api/info",
        "/api/t2i",
        "/api/i2t",
        "/api/inpaint",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/files/{name}",
    }
    prompt = spec["components"]["schemas"]["TextToImage"]["properties"]["prompt"]
    assert (prompt["minLength"], prompt["maxLength"]) == (1, 300)


def upload(data: bytes, **form) -> dict:
    return {"files": {"image": ("x.png", data, "image/png")}, "data": form}


def truncated_png() -> bytes:
    data = picture_png()
    return data[: len(data) - 30]


BAD = [
    # (url, request, status, detail: the exact text, or for FastAPI's validation the (location, type))
    ("/api/t2i", {"json": {"prompt": "x" * 301}}, 422, (["body", "prompt"], "string_too_long")),
    ("/api/t2i", {"json": {"prompt": "   "}}, 422, "prompt is blank"),
    ("/api/t2i", {"json": {"prompt": PROMPT, "candidates": 9}}, 422, (["body", "candidates"], "less_than_equal")),
    ("/api/t2i", {"json": {"prompt": PROMPT, "steps": 0}}, 422, (["body", "steps"], "greater_than_equal")),
    ("/api/t2i", {"json": {"prompt": PROMPT, "negative": "x"}}, 422, (["body", "negative"], "extra_forbidden")),
    (
        "/api/t2i",
        {"content": b"{", "headers": {"content-type": "application/json"}},
        422,
        (["body", 1], "json_invalid"),
    ),
    ("/api/t2x", {"json": {"prompt": PROMPT}}, 404, "unknown task 't2x': this server runs t2i, i2t, inpaint"),
    ("/api/i2t", upload(b"GIF89a nonsense"), 400, "image: not a PNG, JPEG or other picture Pillow can read"),
    ("/api/i2t", upload(b""), 400, "image: the upload is empty"),
    ("/api/i2t", {"data": {"steps": "3"}}, 422, (["body", "image"], "missing")),
    ("/api/i2t", upload(picture_png(), steps="65"), 422, (["body", "steps"], "less_than_equal")),
    ("/api/i2t", upload(b"x" * 1_000_001), 413, "request body over 1,000,000 bytes"),
    (
        "/api/inpaint",
        upload(picture_png(), region="1,2,3"),
        422,
        "region: region must be four numbers top,left,bottom,right; got '1,2,3'",
    ),
    (
        "/api/inpaint",
        upload(picture_png(), region="0.5,0.5,0.2,0.9"),
        422,
        "region: region (top, left, bottom, right) needs 0 <= top < bottom <= 1 and 0 <= left < right <= 1,"
        " got (0.5, 0.5, 0.2, 0.9)",
    ),
    ("/api/inpaint", upload(picture_png(), caption="y" * 301), 422, (["body", "caption"], "string_too_long")),
]


@pytest.mark.parametrize("url, request_kwargs, status, detail", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_a_bad_request_gets_one_clear_4xx_and_queues_nothing(client, url, request_kwargs, status, detail):
    jobs = dict(client.app.state.jobs.jobs)
    answer = client.post(url, **request_kwargs)
    assert answer.status_code == status, answer.text
    found = answer.json()["detail"]
    if isinstance(detail, tuple):
        assert [(d["loc"], d["type"]) for d in found] == [detail]
    else:
        assert found == detail
    assert client.app.state.jobs.jobs == jobs


def test_an_image_that_reads_but_does_not_decode_is_a_400(client):
    answer = client.post("/api/i2t", **upload(truncated_png()))
    assert answer.status_code == 400 and answer.json()["detail"].startswith("image: it does not decode ("), answer.text


def test_pixels_over_the_limit_are_refused_before_decoding(client, monkeypatch):
    monkeypatch.setattr(app_module, "LIMITS", attrs.evolve(app_module.LIMITS, pixels=100))
    answer = client.post("/api/i2t", **upload(picture_png()))
    assert (answer.status_code, answer.json()) == (413, {"detail": "image: 32x32 is over 100 pixels"})


def test_a_body_without_a_length_is_refused(client):
    answer = client.post("/api/t2i", content=iter([b'{"prompt": "x"}']), headers={"content-type": "application/json"})
    assert (answer.status_code, answer.json()) == (411, {"detail": "a request body needs a Content-Length"})


def test_no_request_path_reaches_the_file_system(client):
    job = submit(client, "/api/t2i", json={"prompt": PROMPT, "candidates": 1, "steps": 1})
    # Names are looked up among the job's own; a path with slashes matches no route at all.
    answers = {
        name: client.get(job["files"] + name) for name in ("..%2F..%2Fengine.py", "%2Fetc%2Fpasswd", "engine.py")
    }
    assert {name: (a.status_code, a.json()["detail"]) for name, a in answers.items()} == {
        "..%2F..%2Fengine.py": (404, "Not Found"),
        "%2Fetc%2Fpasswd": (404, "Not Found"),
        "engine.py": (404, f"job {job['id']} has no file 'engine.py'"),
    }
    assert client.get("/api/jobs/nope").json() == {"detail": "no job 'nope' (finished jobs are kept for a while)"}
    assert [
        client.get(f"/static/{name}").status_code for name in ("app.js", "style.css", "engine.py", "..%2Fapp.py")
    ] == [200, 200, 404, 404]
    page = client.get("/")
    assert (
        page.status_code == 200
        and '<script src="/static/app.js">' in page.text
        and "http" not in page.text.split("<body>")[0].replace("http-equiv", "")
    )


class GatedEngine:
    """A model stand-in: each job waits for the gate, then echoes its prompt; 'fail' and 'crash' fail."""

    defaults = {"sampler": "maskgit", "image_steps": 1, "text_steps": 1, "guidance": 0.0}

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.order: list[str] = []

    def check(self, request) -> None:
        pass

    def generate(self, request, *, out_dir, on_frame):
        self.gate.wait(timeout=60)
        prompt = request.items["text"]
        self.order.append(prompt)
        if prompt == "fail":
            raise ValueError("the model refuses this prompt")
        if prompt == "crash":
            raise RuntimeError("a bug")
        on_frame(Frame(step=1, steps=1, modality="text", texts=[prompt]))
        return Result(pictures=[], texts=[prompt])


def wait_until(predicate, *, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_full_queue_answers_503_with_retry_after_and_loses_nothing(tmp_path):
    engine = GatedEngine()
    with TestClient(create_app(engine, out_dir=tmp_path, capacity=2)) as client:
        first = client.post("/api/t2i", json={"prompt": "a"}).json()
        wait_until(lambda: client.get(f"/api/jobs/{first['id']}").json()["status"] == "running")
        queued = [client.post("/api/t2i", json={"prompt": p}) for p in ("b", "c")]
        assert [a.status_code for a in queued] == [202, 202]
        assert [client.get(f"/api/jobs/{a.json()['id']}").json()["position"] for a in queued] == [1, 2]
        busy = client.post("/api/t2i", json={"prompt": "d"})
        assert busy.status_code == 503
        retry = busy.headers["retry-after"]
        assert retry.isdigit() and int(retry) >= 1
        assert busy.json() == {"detail": f"busy: try again in {retry} s"}
        engine.gate.set()
        jobs = [finished(client, j) for j in [first["id"], *(a.json()["id"] for a in queued)]]
        assert [(j["status"], j["result"]["texts"]) for j in jobs] == [
            ("done", ["a"]),
            ("done", ["b"]),
            ("done", ["c"]),
        ]
        again = submit(client, "/api/t2i", json={"prompt": "d"})
        assert again["result"]["texts"] == ["d"]
    assert engine.order == ["a", "b", "c", "d"]


def test_a_failed_job_says_why_and_the_server_goes_on(tmp_path):
    engine = GatedEngine()
    engine.gate.set()
    with TestClient(create_app(engine, out_dir=tmp_path)) as client:
        failed = submit(client, "/api/t2i", json={"prompt": "fail"})
        crashed = submit(client, "/api/t2i", json={"prompt": "crash"})
        fine = submit(client, "/api/t2i", json={"prompt": "fine"})
    assert (failed["status"], failed["error"]) == ("failed", "the model refuses this prompt")
    assert (crashed["status"], crashed["error"]) == (
        "failed",
        "internal error (RuntimeError); the server log has the details",
    )
    assert (fine["status"], fine["result"]["texts"]) == ("done", ["fine"])


# ---- the command ----------------------------------------------------------------------------------


@pytest.fixture
def no_serving(monkeypatch):
    """`mmgen serve` up to the point where uvicorn would serve forever; the sockets it was given."""
    import uvicorn

    given = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: given.extend(sockets))
    yield given
    for listener in given:
        listener.close()


def serve(*args: str):
    return CliRunner().invoke(main, ["serve", *args])


def test_the_command_binds_loopback_by_default(run_dir, tmp_path, no_serving):
    result = serve(str(run_dir), "--port", "0", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    (listener,) = no_serving
    host, port = listener.getsockname()[:2]
    assert host == "127.0.0.1"
    assert result.stdout == (
        f"mmgen serve: http://127.0.0.1:{port}/ (API docs at /docs; outputs in {tmp_path / 'out'}; Ctrl-C stops)\n"
    )
    assert result.stderr == ""


def test_another_interface_needs_the_flag_and_gets_a_warning(run_dir, tmp_path, no_serving):
    result = serve(str(run_dir), "--host", "0.0.0.0", "--port", "0", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert no_serving[0].getsockname()[0] == "0.0.0.0"
    assert result.stderr == (
        "warning: listening on 0.0.0.0: anyone who can reach this machine can use the model (no authentication)\n"
    )


def test_a_taken_port_and_a_folder_without_a_run_are_one_line_each(run_dir, tmp_path, no_serving):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = serve(str(run_dir), "--port", str(port))
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: mmgen serve: cannot listen on 127.0.0.1 port {port}: Address already in use\n",
    )
    result = serve(str(tmp_path), "--port", "0")
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: no finished stage under {tmp_path / 'artefacts'} makes a model (train, finetune, ...)\n",
    )
    result = serve(str(run_dir), "--port", "0", "--set", "task.region=[0,0,1,1]")
    assert (result.exit_code, result.stderr) == (
        2,
        "error: mmgen serve: --set task.region=[0,0,1,1]:"
        " serve takes sampler options only (sampler.fixed.steps=16, ...)\n",
    )


def test_without_python_multipart_the_command_says_which_extra(run_dir, tmp_path, no_serving, monkeypatch):
    # `pip install -e .` brings FastAPI (through MLflow) but not python-multipart, which uploads need.
    import importlib.util

    find_spec = importlib.util.find_spec
    hidden = ("python_multipart", "multipart")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else find_spec(name, *a))
    result = serve(str(run_dir), "--port", "0", "--out", str(tmp_path))
    assert (result.exit_code, result.stderr) == (
        2,
        "error: mmgen serve needs the serve extra (python-multipart is missing): pip install 'mmgen[serve]'\n",
    )
    assert no_serving == []


def test_the_sampler_comes_from_the_recipe_then_set(run_dir):
    recipe = ROOT / "recipes" / "shapes.yaml"
    data = sampler_data(recipe, ("sampler.fixed.steps=8",))
    expected = yaml.safe_load(recipe.read_text())["stages"]["generate"]["sampler"]
    expected["fixed"]["steps"] = 8
    assert data == expected
    engine = Engine(run_dir, registry=load_registry(), sampler=data)
    assert engine.defaults == {"sampler": "maskgit", "image_steps": 8, "text_steps": 24, "guidance": 2.0}


def test_closing_with_a_full_queue_finishes_the_running_job_and_drops_the_rest():
    from mmgen.plugins.serve.jobs import JobQueue

    gate = threading.Event()
    jobs = JobQueue(lambda job: gate.wait(timeout=60), capacity=1)
    running = jobs.submit("t2i", None)
    wait_until(lambda: running.status == "running")
    waiting = jobs.submit("t2i", None)
    threading.Timer(0.2, gate.set).start()
    jobs.close()  # returns although the queue is full
    assert (running.status, waiting.status) == ("done", "queued")
    assert not jobs.worker.is_alive()
