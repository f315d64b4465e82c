"""Drives a real Blynk Python client library against the gateway, for the end-to-end tests.

usage: blynk_client.py LIB PORT TOKEN [--ca CA_PEM] [--write PIN VALUE] [--sync PIN]

LIB is `blynklib` (PyPI blynklib 0.2.6; plain, or TLS with --ca) or `BlynkLib` (PyPI
blynk-library-python 0.2.0; plain only). The script connects and logs in, optionally writes a
virtual pin, optionally asks the gateway to sync a pin and waits for the value to come back through
the library's write handler, then disconnects and prints one JSON object:
{"connected": true, "synced": ["42"] | null}. It exits non-zero on any failure, within 20 s.
"""

import argparse
import json
import os
import sys
import time

DEADLINE = time.time() + 20


def log(*args):
    print(*args, file=sys.stderr)


def quiet_logo():
    # Both libraries print an ASCII logo on stdout at import or construction time.
    sys.stdout = sys.stderr


def run_blynklib(args):
    import blynklib

    kwargs = dict(server="127.0.0.1", port=args.port, heartbeat=10, log=log)
    if args.ca:
        kwargs["ssl_cert"] = args.ca
    blynk = blynklib.Blynk(args.token, **kwargs)
    synced = {}
    if args.sync is not None:
        @blynk.handle_event("write V{}".format(args.sync))
        def on_write(pin, values):
            synced["values"] = values

    if not blynk.connect(timeout=10):
        raise SystemExit("blynklib could not connect and log in")
    if args.write:
        blynk.virtual_write(int(args.write[0]), args.write[1])
        blynk.read_response(timeout=0.3)
    if args.sync is not None:
        blynk.virtual_sync(args.sync)
        while "values" not in synced and time.time() < DEADLINE:
            blynk.run()
    connected = blynk.connected()
    blynk._socket.close()
    return connected, synced.get("values")


def run_blynklib_python(args):
    import BlynkLib

    synced = {}
    blynk = BlynkLib.Blynk(args.token, server="127.0.0.1", port=args.port, log=log)
    state = {"connected": False}

    @blynk.ON("connected")
    def on_connected(ping):
        state["connected"] = True

    if args.sync is not None:
        @blynk.ON("V{}".format(args.sync))
        def on_write(values):
            synced["values"] = values

    while not state["connected"] and time.time() < DEADLINE:
        blynk.run()
    if not state["connected"]:
        raise SystemExit("BlynkLib could not log in")
    if args.write:
        blynk.virtual_write(int(args.write[0]), args.write[1])
    if args.sync is not None:
        blynk.sync_virtual(args.sync)
        while "values" not in synced and time.time() < DEADLINE:
            blynk.run()
    blynk.disconnect()
    return state["connected"], synced.get("values")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("lib", choices=["blynklib", "BlynkLib"])
    parser.add_argument("port", type=int)
    # An option, not a positional: a base64url token may start with "-", which argparse would
    # take for a flag; "--token=VALUE" is unambiguous.
    parser.add_argument("--token", required=True)
    parser.add_argument("--ca")
    parser.add_argument("--write", nargs=2, metavar=("PIN", "VALUE"))
    parser.add_argument("--sync", type=int)
    args = parser.parse_args()
    real_stdout = sys.stdout
    quiet_logo()
    runner = run_blynklib if args.lib == "blynklib" else run_blynklib_python
    connected, synced = runner(args)
    if args.sync is not None and synced is None:
        raise SystemExit("no value came back for V{} within the deadline".format(args.sync))
    real_stdout.write(json.dumps({"connected": connected, "synced": synced}) + "\n")
    real_stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
