"""The retrieval service under concurrent load, against one-at-a-time Python calls and against
its ceiling (offline ``search_batch`` of the same retriever), same run.

Usage:
    python benchmarks/bench_serve.py [--docs 300] [--clients 1,8,32,128] [--requests 4]
        [--baseline 64] [--backend torch] [--max-batch-off] [--ceiling 512] [--pin]

1. Indexes ``--docs`` squad-it-dev paragraphs (MiniLM, 128-d, two-stage) into a MemoryStore
   folder, then times ``--baseline`` one-at-a-time ``Retriever.search(q, k=10)`` calls in this
   process (the Python API, no HTTP).
2. Starts ``bertino-rag serve`` on that folder (a separate process, 127.0.0.1, a free port)
   and, for each client count C, runs C concurrent HTTP clients that each send ``--requests``
   ``POST /search`` (one question, k=10) one after the other; throughput is requests / wall
   time, latency per request as the client sees it. With ``--max-batch-off`` the same load is
   also run against a service started with ``--max-batch 1`` (no micro-batching).

3. The ceiling: ``--ceiling`` questions through ``Retriever.search_batch`` in batches of
   the service's ``--max-queries`` (64), in this process with no HTTP: the most the
   retriever answers per second on these cores. Measured before and after the service runs
   (the table uses their median), and every service row is reported as a share of it.

The load generator runs in its own process. With ``--pin`` (machines with at least 2 CPUs) the
service and the ceiling run on all CPUs but the last, and the load generator on the last one,
so that the clients do not take the service's cores (the ceiling is measured on the same CPUs
as the service).

Every loop is bounded in count and in time (``--deadline`` seconds per level); all traffic is to
127.0.0.1. Questions are distinct squad-it-dev questions. Prints one JSON line per row and a
markdown table at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _indexing_common import SQUAD, machine, minilm

REPO = Path(__file__).resolve().parents[1]


def stats(latencies: list[float], wall: float) -> dict:
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies), "wall_s": round(wall, 2),
        "throughput_qps": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(store: str, args: argparse.Namespace, *extra: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "bertino_rag.cli", "serve", "--model", minilm(),
           "--store", f"memory:{store}", "--port", str(port), "--backend", args.backend,
           "--log-level", "warning", "--max-queries", "64", *extra]
    proc = subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise SystemExit("the service did not become ready")


async def load(url: str, questions: list[str], clients: int, requests: int,
               deadline_s: float) -> dict:
    """``clients`` concurrent clients, ``requests`` sequential searches each."""
    import httpx

    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        # warm up the connections and the server
        await asyncio.gather(*(http.post("/search", json={"query": questions[i % 50], "k": 10})
                               for i in range(min(clients, 32))))
        stop_at = time.monotonic() + deadline_s

        async def client(c: int) -> None:
            for r in range(requests):
                if time.monotonic() > stop_at:
                    return
                q = questions[(c * requests + r) % len(questions)]
                t = time.perf_counter()
                resp = await http.post("/search", json={"query": q, "k": 10})
                latencies.append(time.perf_counter() - t)
                resp.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        wall = time.perf_counter() - started
    out = stats(latencies, wall)
    out["complete"] = len(latencies) == clients * requests
    return out


def pinned_cpus(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(service CPUs, load generator CPUs), or ``(None, None)`` when not pinned."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return set(cpus[:-1]), {cpus[-1]}


def load_in_process(url: str, clients: int, args: argparse.Namespace,
                    cpus: set[int] | None) -> dict:
    """:func:`load` in a separate process (pinned to ``cpus`` when given)."""
    cmd = [sys.executable, __file__, "--load-url", url, "--clients", str(clients),
           "--requests", str(args.requests), "--deadline", str(args.deadline)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ,
                         preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    if res.returncode != 0:
        raise SystemExit(f"the load generator failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def ceiling(r, questions: list[str], count: int, batch: int) -> float:
    """Queries per second of ``search_batch`` over ``count`` questions, ``batch`` at a time."""
    asked = questions[:count]
    started = time.perf_counter()
    for i in range(0, len(asked), batch):
        r.search_batch(asked[i:i + batch], k=10)
    return len(asked) / (time.perf_counter() - started)


def batch_histogram(url: str) -> dict:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        for name in ("bertino_rag_search_batch_queries_count",
                     "bertino_rag_search_batch_queries_sum"):
            if line.startswith(name + " "):
                values[name.rsplit("_", 1)[1]] = float(line.split()[1])
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--clients", default="1,8,32,128")
    ap.add_argument("--requests", type=int, default=4, help="requests per client")
    ap.add_argument("--baseline", type=int, default=64, help="one-at-a-time Python calls")
    ap.add_argument("--backend", default="torch", choices=["torch", "onnx", "openvino"])
    ap.add_argument("--deadline", type=float, default=300, help="seconds per load level")
    ap.add_argument("--max-batch-off", action="store_true",
                    help="also measure a service without micro-batching (--max-batch 1)")
    ap.add_argument("--ceiling", type=int, default=512,
                    help="questions through offline search_batch (the ceiling); 0: skip")
    ap.add_argument("--pin", action="store_true",
                    help="service on all CPUs but the last, the load generator on the last")
    ap.add_argument("--load-url", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from bertino_rag.data import load_beir

    beir = load_beir(SQUAD)
    questions = list(beir.queries.values())
    if args.load_url:  # the load generator's process
        print(json.dumps(asyncio.run(load(args.load_url, questions, int(args.clients),
                                          args.requests, args.deadline))))
        return
    from bertino_rag import MemoryStore, Retriever

    docs = [{"id": d, "text": v["text"]} for d, v in list(beir.corpus.items())[: args.docs]]
    service_cpus, load_cpus = pinned_cpus(args.pin)
    if service_cpus:
        os.sched_setaffinity(0, service_cpus)  # the ceiling, and the service it starts
    print(json.dumps({"machine": machine(), "args": vars(args)}), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        with Retriever(dim=128, model=minilm(), store=MemoryStore(path=tmp),
                       backend=args.backend) as r:
            r.index(docs, show_progress_bar=False)
            for q in questions[:8]:  # warm up
                r.search(q, k=10)
            lat = []
            started = time.perf_counter()
            for q in questions[: args.baseline]:
                t = time.perf_counter()
                r.search(q, k=10)
                lat.append(time.perf_counter() - t)
            row = {"what": "Python API, one at a time", "clients": 1,
                   **stats(lat, time.perf_counter() - started)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            # what batching can buy: one encoder call for n questions (median of 3)
            for n in (1, 4, 16, 64):
                times = []
                for _ in range(3):
                    t = time.perf_counter()
                    r.encoder.encode(questions[:n], kind="query", dim=128,
                                     warn_truncation=False)
                    times.append(time.perf_counter() - t)
                print(json.dumps({"encode_questions": n,
                                  "ms": round(1000 * float(np.median(times)), 1)}), flush=True)
            ceilings = []
            if args.ceiling:
                ceilings.append(ceiling(r, questions, args.ceiling, 64))
                print(json.dumps({"ceiling_qps_before": round(ceilings[0], 1)}), flush=True)
        configs = [("service", ())]
        if args.max_batch_off:
            configs.append(("service, --max-batch 1", ("--max-batch", "1")))
        for name, extra in configs:
            proc, url = start_server(tmp, args, *extra)
            try:
                for clients in [int(c) for c in args.clients.split(",")]:
                    before = batch_histogram(url)
                    row = {"what": name, "clients": clients,
                           **load_in_process(url, clients, args, load_cpus)}
                    after = batch_histogram(url)
                    calls = after.get("count", 0) - before.get("count", 0)
                    queries = after.get("sum", 0) - before.get("sum", 0)
                    row["queries_per_encoder_call"] = round(queries / calls, 1) if calls else None
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                proc.terminate()
                proc.wait(60)
        if args.ceiling:
            with Retriever(dim=128, model=minilm(), store=MemoryStore(path=tmp),
                           backend=args.backend) as r:
                ceilings.append(ceiling(r, questions, args.ceiling, 64))
            print(json.dumps({"ceiling_qps_after": round(ceilings[-1], 1)}), flush=True)
    top = float(np.median(ceilings)) if ceilings else None
    if top:
        print(json.dumps({"ceiling_qps": round(top, 1), "pinned": service_cpus is not None,
                          "service_cpus": sorted(service_cpus or []),
                          "load_cpus": sorted(load_cpus or [])}))
    base = rows[0]["throughput_qps"]
    print("\n| what | clients | requests | throughput (q/s) | vs Python | share of ceiling | "
          "p50 / p95 / p99 (ms) | queries per encoder call |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        share = f"{row['throughput_qps'] / top:.0%}" if top else "-"
        print(f"| {row['what']} | {row['clients']} | {row['requests']} | "
              f"{row['throughput_qps']} | {row['throughput_qps'] / base:.2f}x | {share} | "
              f"{row['p50_ms']} / {row['p95_ms']} / {row['p99_ms']} | "
              f"{row.get('queries_per_encoder_call', '-')} |")
    if top:
        print(f"\nceiling (offline search_batch, batches of 64): {top:.1f} q/s")


if __name__ == "__main__":
    main()
