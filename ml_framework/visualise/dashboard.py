"""`ml-visualise --mode dashboard`: optuna-dashboard on a study's storage, served on 127.0.0.1 until
Ctrl-C. The storage is opened by the same `open_storage` as ml-search and the plots."""

from __future__ import annotations

from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ml_framework.errors import ConfigError, UserError

HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connections never keep Ctrl-C waiting


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line per request on the console


def dashboard_app(storage: Any) -> Any:
    """optuna-dashboard's WSGI app on an opened Optuna storage; a missing extra is one UserError."""
    try:
        import optuna_dashboard
    except ImportError as e:
        raise UserError('the dashboard needs optuna-dashboard: pip install "ml_framework[dashboard]"') from e
    return optuna_dashboard.wsgi(storage)


def serve_dashboard(
    storage_url: str, study_name: str | None, port: int, console: Any, host: str = HOST
) -> None:
    """Serve the dashboard on host:port and print the study's URL; returns on Ctrl-C."""
    import optuna

    from ml_framework.search.storage import mask_url, open_storage
    from ml_framework.visualise.study import load_view

    name = load_view(storage_url, study_name).name  # an unknown name lists the studies there
    storage = open_storage(storage_url, must_exist=True)
    study_id = storage.get_study_id_from_name(name)
    app = dashboard_app(storage)
    try:
        server = make_server(host, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler)
    except OSError as e:
        raise ConfigError(
            f"--port {port}: cannot listen on {host}:{port} ({e.strerror}); pick another --port"
        ) from e
    url = f"http://{host}:{server.server_port}/dashboard/studies/{study_id}"
    console.print(f"optuna-dashboard for study '{name}' ({mask_url(storage_url)})")
    console.print(f"open {url}   (Ctrl-C to stop)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("dashboard stopped")
    finally:
        server.server_close()
