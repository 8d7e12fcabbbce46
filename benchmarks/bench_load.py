"""Bounded load test of `modalign serve`: concurrent clients on loopback ONLY, for a fixed time.

Starts the real server (a subprocess on 127.0.0.1, a free port), runs --clients asyncio/httpx clients
that POST /search/text (varied queries) for --seconds, and reports throughput, p50 / p99 latency,
failed requests (must be 0) and the server's RSS before / after (growth must stay under --max-rss-growth-mb).

  python benchmarks/bench_load.py --index indexes/tux --clients 32 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info  # noqa: E402

QUERIES = ["a red bird", "a blue car", "a flower", "fruit", "a planet in space", "a dog", "a tree", "a boat"]
KEY = "load-test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


async def _client(http, url: str, until: float, lat: list[float], errors: list[str], i: int) -> None:
    n = i
    while time.perf_counter() < until:
        q = QUERIES[n % len(QUERIES)] + ("" if n % 3 else f" number {n % 17}")
        n += 1
        t0 = time.perf_counter()
        try:
            r = await http.post(url, json={"text": q, "k": 10})
            if r.status_code != 200 or len(r.json()["results"]) != 10:
                errors.append(f"{r.status_code}: {r.text[:100]}")
                continue
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            errors.append(repr(e))
            continue
        lat.append(time.perf_counter() - t0)


async def _run(base: str, clients: int, seconds: float) -> tuple[list[float], list[str], float]:
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                                 limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(_client(http, "/search/text", t0 + seconds, lat, errors, i) for i in range(clients)))
        return lat, errors, time.perf_counter() - t0


def main() -> None:
    import numpy as np

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", type=Path, required=True)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--max-rss-growth-mb", type=float, default=50.0)
    args = p.parse_args()
    port = _free_port()
    env = {**os.environ, "MODALIGN_API_KEY": KEY, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    server = subprocess.Popen([sys.executable, "-m", "modalign.cli.main", "serve", str(args.index), "--host",
                               "127.0.0.1", "--port", str(port), "-q"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(base + "/ready", headers={"X-API-Key": KEY}).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise SystemExit("the server exited before it was ready")
            time.sleep(0.1)
        asyncio.run(_run(base, 4, 2.0))  # warm-up
        rss0 = _rss_mb(server.pid)
        lat, errors, wall = asyncio.run(_run(base, args.clients, args.seconds))
        rss1 = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=20)
    ms = np.array(lat) * 1000
    out = {"clients": args.clients, "seconds": round(wall, 1), "requests": len(lat), "failed": len(errors),
           "throughput_rps": round(len(lat) / wall, 1), "p50_ms": round(float(np.median(ms)), 1),
           "p99_ms": round(float(np.percentile(ms, 99)), 1), "rss_before_mb": round(rss0, 1),
           "rss_after_mb": round(rss1, 1), "rss_growth_mb": round(rss1 - rss0, 1), "first_errors": errors[:5],
           "machine": machine_info()}
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "load.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=2))
    if errors or rss1 - rss0 > args.max_rss_growth_mb:
        raise SystemExit(f"FAILED: {len(errors)} failed requests, RSS growth {rss1 - rss0:.1f} MB")


if __name__ == "__main__":
    main()
