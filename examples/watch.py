#!/usr/bin/env python3
"""watch.py: print every change under a key prefix until Ctrl-C.

Run (from the repository root, after `cargo build --release`):

    NKV_LIB=target/release/libnkv.so PYTHONPATH=bindings/python \\
        python3 examples/watch.py net

or, with the binding installed (`pip install ./bindings/python` builds
libnkv with cargo and puts it inside the package):

    python3 examples/watch.py net [unix:/path/to/nkv.sock]

The server address defaults to $NKV_ADDR, else the default socket.
Then, in another terminal: nkv put net.eth0.state up
"""

import sys

import nkv
from nkv import EventKind


def main() -> int:
    prefix = sys.argv[1] if len(sys.argv) > 1 else ""  # "" watches every key
    addr = sys.argv[2] if len(sys.argv) > 2 else None
    try:
        with nkv.Client(addr) as client:
            for ev in client.watch(prefix):
                if ev.kind is EventKind.UPDATE:
                    text = ev.value.decode("utf-8", "replace")
                    print(f"UPDATE {ev.key} = {text} (revision {ev.revision})", flush=True)
                elif ev.kind is EventKind.DELETE:
                    print(f"DELETE {ev.key} (revision {ev.revision})", flush=True)
                elif ev.kind is EventKind.SYNCED:
                    print(f"SYNCED at revision {ev.revision}", flush=True)
                elif ev.kind is EventKind.CLOSED:
                    print(f"CLOSED: {ev.reason}", flush=True)
                else:
                    print(ev.kind.name, flush=True)
    except KeyboardInterrupt:
        pass
    except nkv.Error as e:
        print(f"watch: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
