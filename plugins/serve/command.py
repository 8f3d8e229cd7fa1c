"""`mmgen serve RUN`: the web page and JSON API over a run's trained model, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import importlib.util
import socket
import tempfile
from pathlib import Path
from typing import Any

import click

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command("serve")
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to listen on (another than loopback: a warning)."
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where each request's outputs go (PNGs, generations.jsonl); default: a new temporary folder.",
)
@click.option(
    "--recipe",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Sample as this recipe's generate stage does (its `sampler`), e.g. recipes/shapes.yaml.",
)
@click.option(
    "--set", "overrides", multiple=True, metavar="PATH=VALUE", help="A sampler option, e.g. sampler.fixed.steps=16."
)
@click.option(
    "--queue",
    "capacity",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Requests that may wait; more get 503.",
)
@click.option("--example-prompt", default=None, help="The prompt the page starts with (default: a Shapes caption).")
@click.option("--device", default="cpu", show_default=True)
def serve(run_dir, host, port, out_dir, recipe, overrides, capacity, example_prompt, device):  # fmt: skip
    """Serve a web page and JSON API over a trained RUN (a recipe workdir, e.g. checkpoints/shapes)."""
    from mmgen.api import ConfigError, UserError, load_registry

    try:
        import uvicorn

        from .app import EXAMPLE_PROMPT, create_app
    except ImportError as exc:
        raise UserError(
            f"mmgen serve needs the serve extra ({exc.name} is missing): pip install 'mmgen[serve]'"
        ) from None
    # FastAPI itself comes with MLflow, python-multipart (for uploads) does not: FastAPI would only
    # fail, with a traceback, when the app is built.
    if not any(importlib.util.find_spec(name) for name in ("python_multipart", "multipart")):
        raise UserError("mmgen serve needs the serve extra (python-multipart is missing): pip install 'mmgen[serve]'")
    from .engine import Engine

    listener = listen(host, port)
    if host not in LOOPBACK:
        click.echo(
            f"warning: listening on {host}: anyone who can reach this machine can use the model (no authentication)",
            err=True,
        )
    registry = load_registry()
    try:
        sampler = sampler_data(recipe, overrides)
        engine = Engine(run_dir, registry=registry, sampler=sampler, device=device)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        raise UserError(f"mmgen serve: {exc}") from None
    out_dir = out_dir or Path(tempfile.mkdtemp(prefix="mmgen-serve-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(engine, out_dir=out_dir, capacity=capacity, example_prompt=example_prompt or EXAMPLE_PROMPT)
    bound_host, bound_port = listener.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(f"mmgen serve: http://{shown}:{bound_port}/ (API docs at /docs; outputs in {out_dir}; Ctrl-C stops)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[listener])


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, so a taken port is one clear line (and --port 0 picks a free one)."""
    from mmgen.api import UserError

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError as exc:
        raise UserError(f"mmgen serve: cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    listener.listen(128)
    return listener


def sampler_data(recipe: Path | None, overrides: tuple[str, ...]) -> dict[str, Any] | None:
    """The sampler as data: the recipe's generate stage's (if given), then each `--set sampler.PATH=VALUE`."""
    import yaml

    from mmgen.api import parse_override

    data: dict[str, Any] | None = None
    if recipe is not None:
        stages = (yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("stages") or {}
        generate = stages.get("generate") or {}
        data = generate.get("sampler") if isinstance(generate, dict) else None
        if data is None:
            raise ValueError(f"--recipe {recipe}: its generate stage names no sampler")
        data = {"use": data} if isinstance(data, str) else dict(data)
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] != "sampler" or len(parts) < 2:
            raise ValueError(f"--set {text}: serve takes sampler options only (sampler.fixed.steps=16, ...)")
        data = data or {"use": "maskgit"}
        node = data
        for part in parts[1:-1]:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[parts[-1]] = value
    return data
