"""``gpcis demo``: serve the interactive demo page on a local port.

The method comes from :func:`gpcis.inference.cli.make_method_factory` (``--method``,
``--checkpoint``, or by default the released model when installed, else ``gp-pixel``); its
description is printed at start-up and shown on the page.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gpcis.argtypes import non_negative_float, port, positive_int
from gpcis.inference.cli import DEFAULT_METHOD, add_method_arguments, method_factory_from_args

__all__ = ["add_parser", "run_demo"]


def run_demo(args: argparse.Namespace) -> int:
    """Build the app from parsed options and serve it with werkzeug until Ctrl-C."""
    from gpcis.demo.app import DemoConfig, create_app

    try:
        factory, description = method_factory_from_args(args)
    except ValueError as err:
        print(f"gpcis demo: error: {err}", file=sys.stderr)
        return 2
    if args.max_side is not None and args.max_side != 0 and args.max_side < 16:  # 0: never downscale
        print("gpcis demo: error: --max-side must be 0 (never) or at least 16", file=sys.stderr)
        return 2
    config = DemoConfig(method_name=description, max_side=args.max_side or None,
                        max_sessions=args.max_sessions, idle_s=args.idle_minutes * 60 or None,
                        max_clicks=args.max_clicks)
    print(f"gpcis demo: method: {description}; loading ...", flush=True)
    app = create_app(factory, config)
    err = app.config["GPCIS_LOAD_ERROR"]
    if err:
        print(f"gpcis demo: warning: {err} (the page will show this error)", file=sys.stderr)
    host = args.host
    shown = f"[{host}]" if ":" in host else host
    print(f"gpcis demo: open http://{shown}:{args.port}/ in a browser (Ctrl-C to stop)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print("gpcis demo: warning: the demo is reachable from other machines; it has no authentication",
              file=sys.stderr)
    app.run(host=host, port=args.port, threaded=True, debug=False, use_reloader=False)
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``gpcis demo`` on an ``argparse`` subparsers object and set ``func``."""
    p = subparsers.add_parser(
        "demo",
        help="interactive segmentation in the browser",
        description=(
            "Serve a local web page for interactive segmentation: left click = object, "
            "right click = background. Default method: the released gpcis model when its weights "
            f"are installed, else {DEFAULT_METHOD} (no weights needed); the page and the start-up "
            "message name the method in use."
        ),
    )
    add_method_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=port, default=7860, help="port (default: 7860)")
    p.add_argument(
        "--max-side",
        type=int,
        default=1024,
        help="downscale larger images to this longer side for segmentation; 0 = never (default: 1024)",
    )
    p.add_argument("--max-sessions", type=positive_int, default=8,
                   help="annotation sessions (browser tabs) kept in memory; the least recently used "
                   "is dropped beyond (default: 8)")
    p.add_argument("--idle-minutes", type=non_negative_float, default=60.0,
                   help="drop a session unused this long; 0 = never (default: 60)")
    p.add_argument("--max-clicks", type=positive_int, default=100, help="clicks per object (default: 100)")
    p.set_defaults(func=run_demo)
    return p
