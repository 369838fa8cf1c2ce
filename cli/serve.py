"""`lagnh serve`: the JSON API and search page over a run (FastAPI + uvicorn)."""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path
from typing import Annotated

import typer

from lagnh_pyg.errors import InputError
from lagnh_pyg.rerank import DEFAULT_SCORE as RERANK_SCORE

from .common import DeviceOpt, handle_errors, out

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) resolves only to loopback addresses."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        raise InputError(f"--host {host!r} does not resolve to an address") from None
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


WILDCARDS = ("0.0.0.0", "::", "")


def allowed_hosts(host: str, extra: list[str] | None) -> tuple[str, ...] | None:
    """The ``Host`` names the server answers for: the loopback names, ``--host`` (for a
    wildcard address: this machine's name and every address of its interfaces) and each
    ``--allowed-host``; ``None`` (any) when one of those is ``*``."""
    from lagnh_pyg.serve.app import LOOPBACK_HOSTS

    extra = [h.strip() for h in extra or () if h.strip()]
    if "*" in extra:
        return None
    names = set(LOOPBACK_HOSTS) | set(extra)
    h = host.strip("[]")
    if h in WILDCARDS:
        import psutil

        names |= {socket.gethostname(), socket.getfqdn()}
        names |= {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
                  if a.family in (socket.AF_INET, socket.AF_INET6)}
    else:
        names.add(h)
    return tuple(sorted(n.lower() for n in names if n))


@handle_errors
def serve(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with database codes (`lagnh encode`, `lagnh index`).")],
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    token: Annotated[str | None, typer.Option(help="Bearer token that adding and deleting need (Authorization: Bearer T).", envvar="LAGNH_TOKEN")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body (uploads), in MB.")] = 20.0,
    max_pixels: Annotated[int, typer.Option(help="Largest picture decoded, in pixels (decompression-bomb guard).")] = 40_000_000,
    device: DeviceOpt = "cpu",
    rerank: Annotated[str, typer.Option(help="Default two-stage ranking of the API: re-rank the Hamming top R (0 = off; a request's 'rerank' overrides it; the page asks for 1000).")] = "0",
    rerank_score: Annotated[str | None, typer.Option(help=f"Default re-rank score: asym, features, aux, or weighted sums like 'features:1,aux:1' (default: the run's own, chosen by `lagnh experiment rerank --save`, else {RERANK_SCORE}).")] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(help="Another host name clients may reach the server by (Host header; repeatable), e.g. behind a proxy; '*' answers any (DNS rebinding then works).")] = None,
) -> None:
    """Serve RUN_DIR: search by item id or by a picture, add and delete items, a web page at /.

    Only the loopback names, --host and each --allowed-host are answered (other Host headers
    get 400). Changes need the token, or on a server without one the header
    'X-Requested-With: lagnh' (the page sends it); cross-site requests are refused.

    Example: lagnh serve runs/lagnh32  (then open http://127.0.0.1:8000/)
    """
    try:
        import uvicorn

        from lagnh_pyg.serve import ServeSettings, create_app
    except ModuleNotFoundError as e:
        raise InputError(f"lagnh serve needs {e.name}: pip install 'lagnh-pyg[serve]'") from None
    from lagnh_pyg.device import resolve_device

    if not is_loopback(host) and not token:
        raise InputError(f"--host {host} is reachable from other machines: set --token T (writes then need "
                         "'Authorization: Bearer T'), or serve on 127.0.0.1")
    if not 0 < port < 65536:
        raise InputError(f"--port must lie in 1..65535, got {port}")
    if max_upload_mb <= 0 or max_pixels <= 0:
        raise InputError("--max-upload-mb and --max-pixels must be positive")
    from lagnh_pyg.rerank import RerankScore, check_depth

    settings = ServeSettings(token=token, max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_pixels=max_pixels,
                             device=resolve_device(device), rerank=check_depth(rerank), allowed_hosts=allowed_hosts(host, allowed_host),
                             rerank_score=str(RerankScore.parse(rerank_score)) if rerank_score is not None else None)
    app = create_app(run_dir, settings)
    info = app.state.collection.info()
    if info["upload_search"]:
        try:
            app.state.collection.warm_up()
        except Exception as e:  # noqa: BLE001 - uploads will then answer the reason, one by one
            logger.warning("search by picture will not work: %s", str(e).splitlines()[0][:200] if str(e) else e)
    shown = f"[{host}]" if ":" in host else host
    out.print(f"serving {run_dir} ({info['method']}, {info['bits']} bits, {info['items']} items) at "
              f"http://{shown}:{port}/  (API: /api/search, /api/items, /api/info; Ctrl-C stops)", markup=False, soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
