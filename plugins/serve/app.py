"""The web application of `mmgen serve`: one page and the JSON API behind it (FastAPI; OpenAPI at /docs).

    POST /api/t2i       {prompt, candidates, steps, seed, guidance}           -> 202 {id, ...}
    POST /api/i2t       form: image, steps, seed                              -> 202
    POST /api/inpaint   form: image, region, caption (optional), steps, seed  -> 202
    GET  /api/jobs/ID   status, progress, each refinement step's frame, the outputs
    GET  /api/jobs/ID/files/NAME   a PNG the job made

Requests are checked before they queue: an oversized body (413), an image that does not
decode or has too many pixels (400, 413), a prompt too long or a knob out of range (422),
an unknown task (404). A full queue answers 503 with Retry-After.
"""

from __future__ import annotations

import contextlib
import io
import logging
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, AsyncIterator

import attrs
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from mmgen.api import UserError, __version__

from . import engine as engines
from .jobs import DONE, FAILED, Job, JobQueue, QueueFull, job_folder

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class Limits:
    # Below Starlette's in-memory spool (1 MiB), so an upload never rolls to a temporary file on disk.
    body_bytes: int = 1_000_000
    pixels: int = 4096 * 4096
    prompt_chars: int = 300
    candidates: int = 8
    steps: int = 64
    guidance: float = 10.0


LIMITS = Limits()
SEED_MAX = 2**31 - 1
REGION_HELP = "TOP,LEFT,BOTTOM,RIGHT in image fractions, e.g. 0.25,0.25,0.75,0.75 (the centre)"
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}
EXAMPLE_PROMPT = "a large red circle in the top left and a small blue square in the center"


class TextToImage(BaseModel):
    """A text-to-image request."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=LIMITS.prompt_chars, examples=[EXAMPLE_PROMPT])
    candidates: int = Field(default=4, ge=1, le=LIMITS.candidates, description="independent samples, all shown")
    steps: int | None = Field(default=None, ge=1, le=LIMITS.steps, description="refinement steps; null: the run's")
    seed: int = Field(default=0, ge=0, le=SEED_MAX)
    guidance: float | None = Field(default=None, ge=0, le=LIMITS.guidance, description="null: the run's")


def create_app(engine: Any, *, out_dir: Path, capacity: int = 8, example_prompt: str = EXAMPLE_PROMPT) -> FastAPI:
    """The application over a loaded Engine; jobs publish their outputs under `out_dir`."""
    jobs = JobQueue(lambda job: _run(engine, job, out_dir), capacity=capacity)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        jobs.close()

    app = FastAPI(title="mmgen serve", version=__version__, description=__doc__, lifespan=lifespan)
    app.state.jobs = jobs

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return JSONResponse({"detail": "a request body needs a Content-Length"}, status_code=411)
            if not length.isdigit() or int(length) > LIMITS.body_bytes:
                return _too_large(f"request body over {LIMITS.body_bytes:,} bytes")
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return _static("index.html").decode("utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        """The page's script and style, by a fixed list of names: no request path reaches the file system."""
        if name not in STATIC:
            raise HTTPException(status_code=404, detail="no such file")
        return Response(_static(name), media_type=STATIC[name])

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        """The model's tasks, the knobs' defaults (the run's sampler) and the limits."""
        return {
            "tasks": list(engines.TASKS),
            "defaults": engine.defaults,
            "limits": attrs.asdict(LIMITS),
            "example_prompt": example_prompt,
        }

    def submit(request: engines.Request) -> JSONResponse:
        try:
            engine.check(request)
        except (UserError, ValueError) as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        try:
            job = jobs.submit(request.task, request)
        except QueueFull as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})
        return JSONResponse(_view(jobs, job), status_code=202, headers={"Location": f"/api/jobs/{job.id}"})

    @app.post("/api/t2i", status_code=202)
    def text_to_image(body: TextToImage) -> JSONResponse:
        """Text to image: `candidates` pictures of the prompt, each step of their refinement shown."""
        prompt = body.prompt.strip()
        if not prompt:
            raise HTTPException(status_code=422, detail="prompt is blank")
        return submit(
            engines.Request(
                task="t2i",
                items={"text": prompt},
                candidates=body.candidates,
                seed=body.seed,
                steps=body.steps,
                guidance=body.guidance,
            )
        )

    @app.post("/api/i2t", status_code=202)
    def image_to_text(
        image: Annotated[UploadFile, File(description="PNG or JPEG")],
        steps: Annotated[int | None, Form(ge=1, le=LIMITS.steps)] = None,
        seed: Annotated[int, Form(ge=0, le=SEED_MAX)] = 0,
    ) -> JSONResponse:
        """Image to text: a caption of the uploaded picture."""
        items = {"image": _picture(engine, image)}
        return submit(engines.Request(task="i2t", items=items, seed=seed, steps=steps))

    @app.post("/api/inpaint", status_code=202)
    def inpaint(
        image: Annotated[UploadFile, File(description="PNG or JPEG")],
        region: Annotated[str, Form(description=REGION_HELP)] = "0.25,0.25,0.75,0.75",
        caption: Annotated[str, Form(max_length=LIMITS.prompt_chars)] = "",
        steps: Annotated[int | None, Form(ge=1, le=LIMITS.steps)] = None,
        seed: Annotated[int, Form(ge=0, le=SEED_MAX)] = 0,
        guidance: Annotated[float | None, Form(ge=0, le=LIMITS.guidance)] = None,
    ) -> JSONResponse:
        """Regenerate a region of the uploaded picture; with a caption, under that caption (it2i)."""
        items: dict[str, Any] = {"image": _picture(engine, image)}
        if caption.strip():
            items["text"] = caption.strip()
        request = engines.Request(
            task="inpaint", items=items, seed=seed, steps=steps, guidance=guidance, region=_region(region)
        )
        return submit(request)

    @app.post("/api/{task}", include_in_schema=False)
    def unknown_task(task: str) -> None:
        raise HTTPException(
            status_code=404, detail=f"unknown task {task[:40]!r}: this server runs {', '.join(engines.TASKS)}"
        )

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str) -> dict[str, Any]:
        """A job's status, queue position, progress, each finished step's frame and, when done, its outputs."""
        return _view(jobs, _job(jobs, job_id))

    @app.get("/api/jobs/{job_id}/files/{name}", response_class=Response)
    def job_file(job_id: str, name: str) -> Response:
        """A PNG the job made, by the name its status lists (a step's frame or an output)."""
        data = _job(jobs, job_id).files.get(name)
        if data is None:
            raise HTTPException(status_code=404, detail=f"job {job_id} has no file {name[:60]!r}")
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    return app


def _run(engine: Any, job: Job, out_dir: Path) -> None:
    """The worker's part: generate, keeping each step's frame and the outputs as the job's files."""
    request: engines.Request = job.work

    def on_frame(frame: engines.Frame) -> None:
        index = len(job.frames)
        pictures = [job.add_file(f"step-{index:03d}-{i}.png", p) for i, p in enumerate(frame.pictures)]
        job.step, job.steps = frame.step, frame.steps
        job.frames.append(
            {
                "step": frame.step,
                "steps": frame.steps,
                "modality": frame.modality,
                "files": pictures,
                "texts": frame.texts,
            }
        )

    result = engine.generate(request, out_dir=job_folder(out_dir, job), on_frame=on_frame)
    pictures = [job.add_file(f"output-{i}.png", p) for i, p in enumerate(result.pictures)]
    job.result = {"files": pictures, "texts": result.texts}


def _view(jobs: JobQueue, job: Job) -> dict[str, Any]:
    """A job as JSON; file names are relative to /api/jobs/ID/files/."""
    finished = job.status in (DONE, FAILED)
    return {
        "id": job.id,
        "task": job.task,
        "status": job.status,
        "position": jobs.position(job),
        "step": job.step,
        "steps": job.steps,
        "progress": 1.0 if finished else (job.step / job.steps if job.steps else 0.0),
        "frames": list(job.frames),
        "result": job.result,
        "error": job.error,
        "seconds": job.seconds(),
        "files": f"/api/jobs/{job.id}/files/",
    }


def _job(jobs: JobQueue, job_id: str) -> Job:
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"no job {job_id[:40]!r} (finished jobs are kept for a while)")
    return job


def _static(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


def _too_large(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=413)


def _picture(engine: Any, upload: UploadFile) -> Any:
    """The upload as the image tokenizer loads it, after checking its bytes and pixels."""
    from PIL import Image, UnidentifiedImageError

    data = upload.file.read(LIMITS.body_bytes + 1)
    if not data:
        raise HTTPException(status_code=400, detail="image: the upload is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only: the size before any decoding
            width, height = image.size
    except Image.DecompressionBombError:
        raise HTTPException(status_code=413, detail=f"image: over {LIMITS.pixels:,} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise HTTPException(status_code=400, detail="image: not a PNG, JPEG or other picture Pillow can read") from None
    if width * height > LIMITS.pixels:
        raise HTTPException(status_code=413, detail=f"image: {width}x{height} is over {LIMITS.pixels:,} pixels")
    try:
        return engine.tokenizers["image"].load_item(data)
    except (OSError, ValueError, SyntaxError) as exc:  # a header that reads but pixels that do not
        raise HTTPException(status_code=400, detail=f"image: it does not decode ({exc})") from None


def _region(text: str) -> tuple[float, float, float, float]:
    from mmgen.api import check_box, parse_box

    try:
        return check_box(parse_box(text))
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=f"region: {exc}") from None
