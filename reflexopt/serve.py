"""`reflexopt serve`: the run history and every run's report in a browser, live while runs go on.

Read-only by construction: the only pages are the run list and the report of a run that the run list found (a
request names a run by its key; a key that is not in the list is a 404, so no path from a request ever reaches
the file system). It starts nothing, accepts only GET, and reads only the reflexopt home (runs and batch
folders). The pages are the HTML report itself (no script); a running run's page reloads every few seconds.

It listens on 127.0.0.1 unless told otherwise; then it warns, since anyone who can reach the address can read
every prompt, dataset row and model output in the runs. On loopback it also refuses requests whose Host header
names another site (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
from collections.abc import Awaitable, Callable
from html import escape

from aiohttp import web

from .errors import ConfigError
from .eval_history import eval_page
from .paths import home_dir
from .report import compare_report, page, run_report
from .runs import RunInfo, age, list_runs

HEADERS = {"content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
           "x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "cache-control": "no-store"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_key(r: RunInfo) -> str:
    """A run's address in the view: its folder relative to the reflexopt home (`runs/ID`, `batch/.../job`)."""
    try:
        return r.path.relative_to(home_dir()).as_posix()
    except ValueError:
        return r.path.name


def _index(runs: list[RunInfo], refresh_s: int) -> str:
    rows = []
    for r in runs:
        score = "–" if r.best is None else (f"{r.baseline:.3f} → {r.best:.3f}" if r.baseline is not None
                                            else f"best {r.best:.3f}")
        sig = "" if r.significant is None else ("yes" if r.significant else "no")
        cls = "good" if r.status == "done" else "bad" if r.status in ("failed", "unreadable") else "muted"
        cells = [f"<a href='/run/{escape(run_key(r), quote=True)}'>{escape(r.id)}</a>", escape(age(r.started)),
                 escape(r.kind), escape(r.dataset), escape(r.model), escape(score), sig,
                 r.calls_text(), "" if r.cost is None else f"${r.cost:.4f}",
                 f"<span class={cls}>{escape(r.status)}</span>"]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    running = sum(r.status == "running" for r in runs)
    head = "".join(f"<th>{h}</th>" for h in ("run", "started", "kind", "dataset", "model", "baseline → best",
                                             "sig.", "calls", "cost", "status"))
    body = (f"<h1>reflexopt runs</h1><div class=muted>{len(runs)} runs · {running} running · {escape(str(home_dir()))}"
            f"</div><div class=card><table><tr>{head}</tr>{''.join(rows) or '<tr><td colspan=10>No run yet.</td></tr>'}"
            "</table></div>")
    return page("reflexopt runs", body, refresh_s=refresh_s if running else None)


def _run_page(r: RunInfo, refresh_s: int) -> str:
    nav = "<div class=muted><a href='/'>← all runs</a></div>"
    live = refresh_s if r.status == "running" else None
    if r.kind == "compare":
        return compare_report(r.path, refresh_s=live, nav=nav)
    if r.status == "unreadable":
        return page(r.id, f"<h1>{escape(r.id)}</h1><p class=bad>This run's files are damaged; "
                    f"<code>reflexopt runs show {escape(r.id)}</code> says which.</p>", nav=nav)
    if r.kind == "eval":
        if r.status == "done":
            return eval_page(r.path, nav=nav)
        return page(r.id, f"<h1>{escape(r.id)}</h1><p class=muted>This eval is {escape(r.status)}: its page is "
                    "written when it ends.</p>", nav=nav, refresh_s=live)
    return run_report(r.path, refresh_s=live, nav=nav, running=r.status == "running")


def make_app(*, refresh_s: int = 3, loopback_only: bool = True) -> web.Application:
    async def html(render: Callable[[], str]) -> web.Response:
        text = await asyncio.to_thread(render)  # the reports read files: keep the loop answering
        return web.Response(text=text, content_type="text/html", headers=HEADERS)

    async def index(request: web.Request) -> web.Response:
        return await html(lambda: _index(list_runs(), refresh_s))

    async def run(request: web.Request) -> web.Response:
        key = request.match_info["key"]
        found = {run_key(r): r for r in await asyncio.to_thread(list_runs)}
        if key not in found:  # only runs the list found: a request's path never reaches the file system
            raise web.HTTPNotFound(text="no such run", headers=HEADERS)
        return await html(lambda: _run_page(found[key], refresh_s))

    @web.middleware
    async def guard(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        host = (request.host or "").rsplit(":", 1)[0].strip("[]")
        if loopback_only and not is_loopback(host):
            raise web.HTTPForbidden(text="this view answers on loopback only", headers=HEADERS)
        return await handler(request)

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", index)
    app.router.add_get("/run/{key:.+}", run)
    return app


async def _serve(host: str, port: int, refresh_s: int, on_ready: Callable[[str], None]) -> None:
    runner = web.AppRunner(make_app(refresh_s=refresh_s, loopback_only=is_loopback(host)), access_log=None,
                           handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                          fix="choose another --port, or stop the program that uses it") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # a signal stops the loop cleanly, even mid-response
        loop.add_signal_handler(sig, stop.set)
    try:
        on_ready(f"http://{host if ':' not in host else f'[{host}]'}:{port}/")
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def serve(host: str = "127.0.0.1", port: int = 8765, *, refresh_s: int = 3,
          on_ready: Callable[[str], None] = lambda url: None) -> None:
    """Serve the run history until SIGINT or SIGTERM. A port in use is a ConfigError."""
    asyncio.run(_serve(host, port, refresh_s, on_ready))
