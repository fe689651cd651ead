"""`appliance bench`: placeholder until the benchmark lands."""

from __future__ import annotations

import argparse
import sys


def main(args: argparse.Namespace) -> int:
    """Not implemented yet."""
    print("appliance bench is not implemented yet", file=sys.stderr)
    return 1
