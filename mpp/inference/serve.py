"""Run the inference server: `python -m mpp.inference.serve --config server.json --port 8000`.

The config is the mapping of `settings_from_config` (providers, `api_key_envs`, `unit_price`,
...). This entry point serves API keys only; a paid server attaches `PaymentConfig` in code
(see the README) or through the `mpp serve` command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mpp.inference.server import create_app
from mpp.inference.settings import InferenceSettings, settings_from_config

__all__ = ["main", "serve"]


def serve(settings: InferenceSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    from mpp.http.server.uvicorn_guard import server_config

    uvicorn.Server(server_config(create_app(settings), host, port)).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mpp.inference.serve")
    parser.add_argument("--config", type=Path, default=None, help="JSON settings file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    config = json.loads(args.config.read_text()) if args.config else {}
    serve(settings_from_config(config), args.host, args.port)


if __name__ == "__main__":
    main()
