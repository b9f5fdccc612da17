"""The `mailserver` command (filled in by the admin CLI work)."""
import sys


def main(argv: list[str] | None = None) -> int:
    print("mailserver: not yet implemented", file=sys.stderr)
    return 2
