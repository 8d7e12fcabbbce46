"""Bounded load test of `modalign serve`: concurrent clients on loopback ONLY, for a fixed time per level.

Starts the real server (a subprocess on 127.0.0.1, a free port), runs N asyncio/httpx clients that POST
/search/text (varied queries) for --seconds at each level of --clients, and reports per level: answered
requests/s, p50 / p99 latency of the answered ones, shed requests (503 + Retry-After: the client waits as
told, then goes on), failed requests (anything else: must be 0) and the server's RSS before / after.
It also splits a lone client's request into queue / text encode / index search (the server's
Server-Timing header) and HTTP + framework (the rest).

With --baseline-src (another checkout's `src/`, e.g. `git archive main src | tar -x -C /tmp/base`) the same
levels run first against a server started from that code, so before / after come from one run on one box.

  python benchmarks/bench_load.py --index indexes/tux --clients 8,32,128 --seconds 20
  python benchmarks/bench_load.py --index IDX --baseline-src /tmp/base/src --baseline-index IDX_OLD --json out.json
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info, write_json  # noqa: E402

QUERIES = ["a red bird", "a blue car", "a flower", "fruit", "a planet in space", "a dog", "a tree", "a boat"]
KEY = "load-test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


class Tally:
    def __init__(self) -> None:
        self.lat: list[float] = []
        self.shed = 0
        self.errors: list[str] = []
        self.timing: list[dict[str, float]] = []


class Conn:
    """One keep-alive HTTP/1.1 connection on raw asyncio streams: a load generator that costs a fraction of
    an HTTP library's CPU per request, so that on a shared 2-core box the figures are the server's, not the
    client's (httpx at 128 connections used more CPU than the server it measured)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {KEY}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
        data = await self.reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return int(head[0].split()[1]), headers, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def _client(conn: Conn, until: float, tally: Tally, i: int) -> None:
    n = i
    while time.perf_counter() < until:
        q = QUERIES[n % len(QUERIES)] + ("" if n % 3 else f" number {n % 17}")
        n += 1
        t0 = time.perf_counter()
        try:
            status, headers, data = await conn.post("/search/text", json.dumps({"text": q, "k": 10}).encode())
            if status == 503 and "retry-after" in headers:
                tally.shed += 1
                await asyncio.sleep(min(float(headers["retry-after"]), max(0.0, until - time.perf_counter())))
                continue
            if status != 200 or len(json.loads(data)["results"]) != 10:
                tally.errors.append(f"{status}: {data[:100]!r}")
                continue
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            tally.errors.append(repr(e))
            await conn.close()
            continue
        tally.lat.append(time.perf_counter() - t0)
        tally.timing.append(_server_timing(headers.get("server-timing", "")))
    await conn.close()


def _server_timing(header: str) -> dict[str, float]:
    """'queue;dur=1.2, encode;dur=8.0' -> {'queue': 1.2, 'encode': 8.0} (milliseconds)."""
    out = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";dur=")
        if name and rest:
            out[name] = float(rest)
    return out


async def _run(base: str, clients: int, seconds: float) -> tuple[Tally, float]:
    host, port = base.removeprefix("http://").split(":")
    tally = Tally()
    t0 = time.perf_counter()
    await asyncio.gather(*(_client(Conn(host, int(port)), t0 + seconds, tally, i) for i in range(clients)))
    return tally, time.perf_counter() - t0


def _cpu_s(pid: int | None = None) -> float:
    """CPU seconds used so far by the server (pid) or by this load generator."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def _server_parts(tally: Tally) -> dict[str, float]:
    """p50 / p99 ms of each part the server reports (queue wait, encode, search) over a level's requests."""
    out = {}
    for k in ("queue", "encode", "search"):
        v = [t[k] for t in tally.timing if k in t]
        if v:
            out[f"{k}_p50_ms"], out[f"{k}_p99_ms"] = round(float(np.median(v)), 1), round(float(np.percentile(v, 99)), 1)
    return out


def _summary(tally: Tally, wall: float, clients: int, rss: tuple[float, float]) -> dict:
    ms = np.array(tally.lat or [float("nan")]) * 1000
    return {"clients": clients, "seconds": round(wall, 1), "answered": len(tally.lat), "shed_503": tally.shed,
            "failed": len(tally.errors), "throughput_rps": round(len(tally.lat) / wall, 1),
            "p50_ms": round(float(np.median(ms)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "rss_before_mb": round(rss[0], 1), "rss_after_mb": round(rss[1], 1),
            "rss_growth_mb": round(rss[1] - rss[0], 1), **_server_parts(tally), "first_errors": tally.errors[:3]}


def _breakdown(tally: Tally) -> dict[str, float]:
    """A lone client's request, median ms: server queue / encode / search, and the rest (HTTP, framework)."""
    total = float(np.median(tally.lat)) * 1000 if tally.lat else float("nan")
    parts = {k: round(float(np.median([t.get(k, 0.0) for t in tally.timing])), 2)
             for k in ("queue", "encode", "search")} if tally.timing and tally.timing[0] else {}
    return {"total_ms": round(total, 2), **parts,
            "http_and_framework_ms": round(total - sum(parts.values()), 2) if parts else None}


def _start_server(index: Path, src: Path | None, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "MODALIGN_API_KEY": KEY, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    server = subprocess.Popen([sys.executable, "-m", "modalign.cli.main", "serve", str(index), "--host", "127.0.0.1",
                               "--port", str(port), "-q", *extra], env=env)
    base = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(1200):
        try:
            if httpx.get(base + "/ready", headers={"X-API-Key": KEY}).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit("the server exited before it was ready")
        time.sleep(0.1)
    server.terminate()
    raise SystemExit("the server was not ready after 120 s")


def measure(index: Path, src: Path | None, levels: list[int], seconds: float, extra: list[str]) -> dict:
    server, base = _start_server(index, src, extra)
    try:
        asyncio.run(_run(base, 4, 2.0))  # warm-up
        lone, _ = asyncio.run(_run(base, 1, min(seconds, 5.0)))
        rows = []
        for clients in levels:
            rss0, cpu0 = _rss_mb(server.pid), (_cpu_s(server.pid), _cpu_s())
            tally, wall = asyncio.run(_run(base, clients, seconds))
            rows.append(_summary(tally, wall, clients, (rss0, _rss_mb(server.pid))))
            rows[-1].update(server_cpu_s=round(_cpu_s(server.pid) - cpu0[0], 1), client_cpu_s=round(_cpu_s() - cpu0[1], 1))
            print(json.dumps(rows[-1]), flush=True)
            time.sleep(1.0)  # let a shed backlog drain between levels
        return {"levels": rows, "one_client": _breakdown(lone)}
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", type=Path, required=True)
    p.add_argument("--clients", default="8,32,128", help="comma-separated client counts, one level each")
    p.add_argument("--seconds", type=float, default=20.0, help="per level")
    p.add_argument("--baseline-src", type=Path, help="a `src/` folder of the code to compare with (before)")
    p.add_argument("--baseline-index", type=Path, help="the index for the baseline (default: --index)")
    p.add_argument("--serve-args", default="", help="extra `modalign serve` flags for the current code")
    p.add_argument("--max-rss-growth-mb", type=float, default=50.0)
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "load.json")
    args = p.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    out: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    if args.baseline_src:
        print("== baseline:", args.baseline_src, flush=True)
        out["baseline"] = measure(args.baseline_index or args.index, args.baseline_src, levels, args.seconds, [])
    print("== current", flush=True)
    out["current"] = measure(args.index, None, levels, args.seconds, args.serve_args.split())
    if args.baseline_src:
        out["ratio_rps"] = {str(b["clients"]): round(c["throughput_rps"] / max(b["throughput_rps"], 1e-9), 2)
                            for b, c in zip(out["baseline"]["levels"], out["current"]["levels"], strict=True)}
    out["machine"] = machine_info()
    write_json(args.json, out)
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=2))
    bad = [r for r in out["current"]["levels"] if r["failed"] or r["rss_growth_mb"] > args.max_rss_growth_mb]
    if bad:
        raise SystemExit(f"FAILED: {bad[0]['failed']} failed requests or RSS growth {bad[0]['rss_growth_mb']} MB "
                         f"at {bad[0]['clients']} clients")


if __name__ == "__main__":
    main()
