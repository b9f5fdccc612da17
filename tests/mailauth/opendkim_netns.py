"""Verify messages with Debian's ``opendkim-testmsg`` against our test zones.

libopendkim resolves keys through libc (``res_query``), which reads /etc/resolv.conf and
only ever asks port 53: it cannot be pointed at the test knot's port. So this script is run
as ``unshare -rmn python opendkim_netns.py ZONES.json MSG...`` — in its own user, mount and
network namespace, where it may bind 127.0.0.1:53, starts knot there with the zones, mounts
a resolv.conf naming 127.0.0.1 over /etc/resolv.conf (visible to this namespace only), runs
``opendkim-testmsg`` on each message and prints one JSON result per message.
Nothing outside the namespace is touched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    from mailserver.testing.dnsserver import KnotServer

    zones = json.loads(Path(sys.argv[1]).read_text())
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".resolv.conf", delete=False) as f:
        f.write("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
    subprocess.run(["mount", "--bind", f.name, "/etc/resolv.conf"], check=True)
    server = KnotServer.start(zones, port=53)
    results = []
    try:
        for path in sys.argv[2:]:
            with open(path, "rb") as msg:
                proc = subprocess.run(["opendkim-testmsg"], stdin=msg, capture_output=True,
                                      timeout=60)
            results.append({"rc": proc.returncode,
                            "out": (proc.stdout + proc.stderr).decode(errors="replace")})
    finally:
        server.stop()
        Path(f.name).unlink(missing_ok=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
