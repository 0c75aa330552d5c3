"""`autointerp review`, `export`, `export-run` and `import`: the review app and files exchanged with
other tools."""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from autointerp.cli.app import (
    DbOption,
    app,
    console,
    resolve_run,
)
from autointerp.config import DEFAULT_DB_PATH
from autointerp.errors import AutointerpError
from autointerp.paths import check_output_path
from autointerp.store.database import Store

MIN_TOKEN_CHARS = 16
"""Shortest `--token` accepted for an app reachable from other machines: a short one can be guessed."""


@app.command()
def review(
    db: DbOption = DEFAULT_DB_PATH,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8765,
    token: Annotated[
        str | None, typer.Option(help="Access token required on every request (env: AUTOINTERP_REVIEW_TOKEN).")
    ] = None,
) -> None:
    """Serve the review app: browse, accept, reject and edit explanations in a web browser."""
    import os

    from autointerp.review import ReviewSettings, create_app
    from autointerp.review.app import is_loopback

    token = token or os.environ.get("AUTOINTERP_REVIEW_TOKEN") or None
    Store(db).check_schema()  # a database of a newer autointerp is refused here, not on the first page
    if not is_loopback(host):
        if not token:
            raise AutointerpError(f"binding to {host} exposes the app beyond this machine; pass --token SECRET")
        if len(token) < MIN_TOKEN_CHARS:
            raise AutointerpError(
                f"--token is {len(token)} characters; one that guards {host} needs at least {MIN_TOKEN_CHARS}"
                ' (e.g. --token "$(openssl rand -hex 16)")'
            )
    listening = bind_ports(host, port)  # a port in use fails here, in one line, before the app is built
    settings = ReviewSettings(db=db, token=token)
    settings.progress = lambda line: console.print(line, highlight=False, markup=False)  # the list index's build
    if not is_loopback(host):
        settings.allowed_hosts = set()  # reachable by any name; the token guards every request
    try:
        review_app = create_app(settings)
    except BaseException:
        for sock in listening:
            sock.close()
        raise
    import uvicorn

    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{listening[0].getsockname()[1]}/" + (f"?token={token}" if token else "")
    console.print(f"review app on {url} (Ctrl-C to stop)", highlight=False, markup=False, soft_wrap=True)
    uvicorn.Server(uvicorn.Config(review_app, log_level="warning")).run(sockets=listening)


def bind_ports(host: str, port: int) -> list[socket.socket]:
    """Returns sockets listening on `port` at every address `host` resolves to (`localhost`: 127.0.0.1 and
    ::1 where both exist; port 0: one free port, the same on each), for the app to serve; raises
    AutointerpError, in one line, for a host this machine cannot bind or a port in use (uvicorn printed the
    URL, then its own error)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise AutointerpError(f"cannot bind --host {host}: {exc.strerror}; pass an address of this machine") from None
    addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in found))
    for _ in range(PORT_TRIES if port == 0 else 1):
        try:
            return _bind_each(host, port, addresses)
        except _PortTaken:  # the free port of the first address is taken on another: pick again
            continue
    raise AutointerpError(f"port {port} on {host} is in use; pass another --port")


PORT_TRIES = 5
"""Free ports tried for `--port 0` when the first address's is taken on another of the host's addresses."""

_SKIPPED = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT)
"""Why an address of the host may be left out once another serves: this machine lacks it, or lacks IPv6."""


class _PortTaken(Exception):
    """The port is in use on one of the host's addresses."""


def _bind_each(host: str, port: int, addresses: list[tuple[Any, Any]]) -> list[socket.socket]:
    """Returns a listening socket per address, on one port; raises _PortTaken, or AutointerpError in one line."""
    listening: list[socket.socket] = []
    try:
        for number, (family, address) in enumerate(addresses):
            if listening:  # the port the first socket was given (port 0 picks one)
                address = (address[0], listening[0].getsockname()[1], *address[2:])
            try:
                listening.append(_listen(family, address, own_family=len(addresses) > 1))
            except OSError as exc:
                if exc.errno in _SKIPPED and (listening or number < len(addresses) - 1):
                    continue
                if exc.errno == errno.EADDRINUSE:
                    raise _PortTaken from None
                raise AutointerpError(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
        if not listening:
            raise AutointerpError(f"cannot bind {host}:{port}: no address of this machine; pass another --host")
    except BaseException:
        for sock in listening:
            sock.close()
        raise
    return listening


def _listen(family: socket.AddressFamily, address: tuple[Any, ...], *, own_family: bool) -> socket.socket:
    """Returns a socket bound to `address` and listening (so a second app cannot take the port while this
    one builds); with `own_family`, an IPv6 socket takes IPv6 alone (another socket serves IPv4). Raises
    OSError."""
    listening = socket.socket(family, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart rebinds at once
        if family == socket.AF_INET6 and own_family:
            listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        listening.bind(address)
        listening.listen(2048)
    except OSError:
        listening.close()
        raise
    return listening


@app.command()
def export(
    db: DbOption = DEFAULT_DB_PATH,
    format_: Annotated[str, typer.Option("--format", "-f", help="jsonl, csv or parquet.")] = "jsonl",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output file (default: stdout).")] = None,
) -> None:
    """Export reviewed explanations (latest verdict, final text, reviewer, notes, score)."""
    import sys

    from autointerp.review import export_reviews

    if out is not None:
        check_output_path(out, "--out", folder=False)
    data = export_reviews(Store(db), format_)
    if out is None:
        sys.stdout.buffer.write(data)
    else:
        _write_output(out, data)
        console.print(f"wrote {out}", highlight=False, markup=False)


def _write_output(out: Path, data: bytes) -> None:
    """Writes an export to `out`, creating its parent folders; an unwritable path is one error line."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    except OSError as exc:
        raise AutointerpError(f"cannot write {out}: {exc.strerror or exc}") from None


@app.command("export-run")
def export_run_command(
    run_id: Annotated[str | None, typer.Argument(help="Run id (default: latest).")] = None,
    db: DbOption = DEFAULT_DB_PATH,
    format_: Annotated[
        str,
        typer.Option("--format", "-f", help="neuronpedia (explanation records and batch-upload bodies) or jsonl."),
    ] = "neuronpedia",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output file (default: stdout).")] = None,
    model_id: Annotated[str | None, typer.Option(help="Neuronpedia modelId (default: the feature's model).")] = None,
    source_set: Annotated[
        str | None, typer.Option(help="Neuronpedia source-set name; source becomes '<L>-<set>' (default per kind).")
    ] = None,
) -> None:
    """Export a run's explanations and scores: Neuronpedia's explanation records, or JSONL with exemplars."""
    import sys

    from autointerp.interop import export_run

    if out is not None:  # before the export's work: a path under a file read "File exists" after it
        check_output_path(out, "--out", folder=False)
    store = Store(db)
    data = export_run(store, resolve_run(store, run_id), format_, model_id, source_set)
    if out is None:
        sys.stdout.buffer.write(data)
    else:
        _write_output(out, data)
        console.print(Text(f"wrote {out}"))


@app.command("import")
def import_command(
    path: Annotated[Path, typer.Argument(help="File or folder of explanations written by another tool.")],
    tool: Annotated[str, typer.Option("--from", help="csv, neuron-explainer or delphi.")] = "csv",
    run_id: Annotated[str | None, typer.Option("--run", help="Run id (default: latest).")] = None,
    db: DbOption = DEFAULT_DB_PATH,
) -> None:
    """Add explanations written by other tools to a run; the next `autointerp run` of its config scores them."""
    from autointerp.interop import import_explanations

    store = Store(db)
    store.migrate()
    result = import_explanations(store, resolve_run(store, run_id), tool, path)
    parts = [f"{result.already_there} already there"]
    if result.repeated:
        parts.append(f"{result.repeated} repeated in the file, stored once")
    if result.refused:
        parts.append(f"placeholders refused: {result.refused}")
    if result.scores_added:
        parts.append(f"{result.scores_added} {tool} scores added")
    if result.skipped_scores:
        skipped = ", ".join(f"{name} ({why})" for name, why in sorted(result.skipped_scores.items()))
        parts.append(f"{tool} scores skipped: {skipped}")
    console.print(
        Text(
            f"imported {result.added} explanations into run {result.run_id} ({'; '.join(parts)}); "
            "rerun the run's config (`autointerp run -c ...`) to score them"
        ),
        soft_wrap=True,
    )
    if result.added or result.scores_added:
        _refresh_review_index(store)


def _refresh_review_index(store: Store) -> None:
    """Brings the review app's feature list index up to date after an import, as a run does at its end."""
    from autointerp.review.queries import refresh_index

    why = refresh_index(store, lambda line: console.print(Text(line), soft_wrap=True))
    if why is not None:
        console.print(Text(why), soft_wrap=True)
