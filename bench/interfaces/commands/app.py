"""``poisonbench app``: the Streamlit explorer (Streamlit itself loads in the launched app)."""

from __future__ import annotations

import argparse

from bench.interfaces.app import launch


def app(args: argparse.Namespace) -> int:
    """``poisonbench app``: the Streamlit server's exit status."""
    return launch(args.run_dir, port=args.port)
