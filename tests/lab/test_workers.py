"""The worker API as a library user sees it (stack/workers.py, README "Embedding it"):
a program that opens the seats itself, runs an echo server in each worker with
``TapStack(..., seat=seat)`` and nothing from apps/, is reported ready by its supervisor,
serves clients from both workers, and reports every worker's counters at the end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest

from apps.labproc import ns_cmd
from tests.lab.stackproc import wait_logged

pytestmark = pytest.mark.lab

PROGRAM = textwrap.dedent("""
    import sys, uvloop
    from stack.aio import Attachment, TapStack
    from stack.workers import open_seats, run_workers
    cns, ctap, sns, stap = sys.argv[1:5]
    attachments = [Attachment(ctap, "198.18.0.2/24", netns=cns),
                   Attachment(stap, "198.19.0.2/24", netns=sns)]

    def worker(seat):
        async def serve():
            async def echo(reader, writer):
                writer.write(b"%d:" % seat.index + await reader.read(-1))
                writer.write_eof()
            async with TapStack(attachments, seat=seat) as net:
                await net.start_server(echo, "198.18.0.2", 7)
                await net.serve_forever()
        uvloop.run(serve())
        return 0

    raise SystemExit(run_workers(open_seats(attachments, 2), worker))
""")

CLIENT = textwrap.dedent("""
    import json, socket
    seen = {}
    for i in range(40):
        s = socket.create_connection(("198.18.0.2", 7), timeout=10)
        s.sendall(b"hello %d" % i); s.shutdown(socket.SHUT_WR)
        got = b""
        while (b := s.recv(4096)):
            got += b
        s.close()
        worker, _, text = got.partition(b":")
        assert text == b"hello %d" % i, got
        seen[worker.decode()] = seen.get(worker.decode(), 0) + 1
    print(json.dumps(seen))
""")


def test_a_library_program_runs_two_workers(lab, tmp_path):
    log = tmp_path / "lib.log"
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, lab.client_ns, lab.client_tap,
                             lab.server_ns, lab.server_tap], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT)
    try:
        wait_logged(proc, log, "ready")
        out = subprocess.run(ns_cmd(lab.client_ns, sys.executable, "-c", CLIENT),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr + log.read_text()
        seen = json.loads(out.stdout)  # requests answered by worker "0" and "1"
        assert set(seen) == {"0", "1"} and sum(seen.values()) == 40
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    text = log.read_text()
    summary = json.loads(text[text.index("{\n"):])
    assert [w["exit"] for w in summary["workers"]] == [0, 0]
    assert all(w["connections"] is not None for w in summary["workers"])
    assert summary["tcp"]["segs_in"] > 0
