"""``poisonbench schema``: the JSON Schema of configs."""

from __future__ import annotations

import argparse
import sys

from bench.interfaces.commands.listing import import_config_plugins
from bench.run.config_schema import schema_text


def schema(args: argparse.Namespace) -> int:
    """``poisonbench schema``: the JSON Schema of configs on stdout; 0."""
    if args.config:
        import_config_plugins(args.config)
    sys.stdout.write(schema_text())
    return 0
