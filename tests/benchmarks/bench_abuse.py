"""Peak memory of `opsagent serve` under the abuse of issue 15: what an attacker who can reach the port costs.

Starts the real `opsagent serve` (from the checkout given with --repo, so main and a branch can be compared on
the same machine) on 127.0.0.1 with a throwaway state dir, then runs, one after the other:
- 4 concurrent chunked POSTs of 100 MiB each to /alertmanager;
- 40 valid POSTs of 900 new alerts each to one group;
- 20 POSTs of deeply nested JSON (100k levels);
and prints the server's resident memory before, its peak (VmHWM) after each attack, and the status codes
seen. `--token` sends (and configures) a Bearer token, for a checkout that authenticates.

Run: uv run python tests/benchmarks/bench_abuse.py [--repo /work/main] [--token]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "abuse-bench-token-0123456789abcdef"


def mem(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            vals[k] = int(v.split()[0]) / 1024
    return vals["VmRSS"], vals["VmHWM"]


def chunked_post(port: int, path: str, total: int, headers: dict[str, str]) -> int:
    s = socket.create_connection(("127.0.0.1", port))
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    s.sendall((head + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
    chunk = 1 << 20
    payload = f"{chunk:x}\r\n".encode() + b"[" * chunk + b"\r\n"
    s.settimeout(30)
    answer = b""
    try:
        for _ in range(total // chunk):
            s.sendall(payload)
            if select.select([s], [], [], 0)[0]:  # the server answered early
                answer = s.recv(4096)
                break
        else:
            s.sendall(b"0\r\n\r\n")
        s.settimeout(120)
        answer = answer or s.recv(4096)
    except OSError:  # reset or timed out while the server stopped reading: it answered or closed
        try:
            s.settimeout(5)
            answer = answer or s.recv(4096)
        except OSError:
            answer = b"HTTP/1.1 000 reset"
    finally:
        s.close()
    return int(answer.split(b" ", 2)[1]) if answer else 0


def alerts_body(batch: int) -> bytes:
    alerts = [{"status": "firing", "labels": {"alertname": "GPUXidError", "Hostname": f"n-{batch}-{i}"},
               "annotations": {"summary": f"xid on n-{batch}-{i}"}, "startsAt": "2026-11-23T08:00:00Z",
               "endsAt": "0001-01-01T00:00:00Z", "fingerprint": f"{batch:04d}{i:06d}"} for i in range(900)]
    return json.dumps({"version": "4", "groupKey": "{}:{alertname=\"GPUXidError\"}", "status": "firing",
                       "receiver": "opsagent", "alerts": alerts}).encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=ROOT)
    ap.add_argument("--token", action="store_true")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    port = args.port or _free_port()
    state = Path(tempfile.mkdtemp(prefix="abuse-"))
    env = {**os.environ, "OPSAGENT_STATE_DIR": str(state)}
    headers = {}
    if args.token:
        env["OPSAGENT_SERVER__AUTH_TOKENS"] = TOKEN
        headers["Authorization"] = f"Bearer {TOKEN}"
    proc = subprocess.Popen([str(args.repo / ".venv" / "bin" / "opsagent"), "serve", "--port", str(port)],
                            cwd=args.repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("opsagent serve did not start")
            time.sleep(0.2)
        print(f"{args.repo}: idle RSS {mem(proc.pid)[0]:.0f} MiB")

        async def four() -> list[int]:
            return list(await asyncio.gather(*(asyncio.to_thread(chunked_post, port, "/alertmanager", 100 << 20,
                                                                 headers) for _ in range(4))))
        codes = asyncio.run(four())
        rss, peak = mem(proc.pid)
        print(f"  4 x 100 MiB chunked: statuses {sorted(codes)}; RSS {rss:.0f}, peak {peak:.0f} MiB")
        statuses: Counter[int] = Counter()
        t0 = time.monotonic()
        for b in range(40):
            r = httpx.post(f"{url}/alertmanager", content=alerts_body(b), headers=headers, timeout=120)
            statuses[r.status_code] += 1
        took = time.monotonic() - t0
        inc = httpx.get(f"{url}/incidents", headers=headers, timeout=30).json()
        print(f"  40 x 900 alerts in {took:.1f}s: statuses {dict(statuses)}; RSS {mem(proc.pid)[0]:.0f}, "
              f"peak {mem(proc.pid)[1]:.0f} MiB; state dir {_du(state):.0f} MiB; incidents {len(inc)}")
        statuses = Counter()
        nested = b"[" * 100_000 + b"]" * 100_000
        for _ in range(20):
            statuses[httpx.post(f"{url}/alertmanager", content=nested, headers=headers, timeout=60).status_code] += 1
        rss, peak = mem(proc.pid)
        print(f"  20 x nested JSON: statuses {dict(statuses)}; RSS {rss:.0f}, peak {peak:.0f} MiB")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _du(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / (1 << 20)


if __name__ == "__main__":
    sys.exit(main())
