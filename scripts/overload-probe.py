#!/usr/bin/env python3
"""Overload probes of a release sidrec-server (figures of RELIABILITY.md).

    scripts/overload-probe.py --model-dir DIR [--server target/release/sidrec-server]
                              [--probe burst|large|all] [--rounds N] [--json FILE]

Starts the server on DIR (a loopback port, the server's defaults otherwise) once per probe and
round, and runs:

* burst: 200 concurrent default `/v1/recommend` requests (50 beams, distinct histories) with
  the default 10 s deadline, then with 3 s (`--burst-deadlines`). Every request must be
  answered 200 within its deadline or refused 429 (`overloaded`, with `Retry-After`) within
  50 ms.
* large: a 3 s deadline; two `/v1/recommend/batch` calls of 64 x 200 beams, then, 0.5 s later,
  20 concurrent small requests (5 beams). Every small request must be answered 200 within
  1.5 s; the large calls must answer (200, each entry answered or refused on its own) within
  their deadline.

Connections are opened before the requests are sent, so the times are those of the requests
alone. Only the Python standard library is used. The exit status is 1 when a bound was missed.
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """A sidrec-server on a free loopback port."""

    def __init__(self, binary, model_dir, deadline_s, log):
        self.port = free_port()
        env = dict(os.environ)
        # One compute thread for the tiny model, as scripts/bench-serving.sh runs it.
        env.setdefault("RAYON_NUM_THREADS", "1")
        env.setdefault("SIDREC_THREADS", "1")
        self.proc = subprocess.Popen(
            [
                binary,
                "--model-dir",
                model_dir,
                "--port",
                str(self.port),
                "--request-timeout",
                f"{deadline_s}s",
                "--watch-interval",
                "0s",
                # Repeated probes must reach the model.
                "--cache-ttl",
                "0s",
                "--log-level",
                "warn",
            ],
            stdout=log,
            stderr=log,
            env=env,
        )

    async def wait_ready(self, timeout=60.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"error: the server exited with {self.proc.returncode}")
            try:
                status, _, _, _ = await request(self.port, "GET", "/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.2)
        raise SystemExit("error: the server did not become ready")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def request(port, method, path, body=None, connected=None, start=None):
    """One HTTP/1.1 request on its own connection; returns status, headers, JSON body and the
    seconds from sending to the whole answer. `connected` is an already open connection;
    `start` an event to wait for before sending."""
    reader, writer = connected or await asyncio.open_connection(HOST, port)
    payload = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    if start is not None:
        await start.wait()
    t0 = time.monotonic()
    writer.write(head + payload)
    await writer.drain()
    raw = await reader.read()
    elapsed = time.monotonic() - t0
    writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        rest = dechunk(rest)
    try:
        data = json.loads(rest) if rest else None
    except ValueError:
        data = None
    return status, headers, data, elapsed


def dechunk(b):
    out = b""
    while b:
        size, _, b = b.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out += b[:n]
        b = b[n + 2 :]
    return out


async def warm(port, rounds=3):
    """A few batches of default requests: the server's measured rate settles."""
    for r in range(rounds):
        res = await asyncio.gather(
            *(
                request(port, "POST", "/v1/recommend", {"history": [2000 + r * 8 + i]})
                for i in range(8)
            )
        )
        assert all(s == 200 for s, *_ in res), res
    _, _, model, _ = await request(port, "GET", "/v1/model")
    return model.get("beams_per_second")


def code(body):
    return ((body or {}).get("error") or {}).get("code")


async def connect_all(port, n):
    return await asyncio.gather(*(asyncio.open_connection(HOST, port) for _ in range(n)))


async def burst(args, log, deadline):
    srv = Server(args.server, args.model_dir, deadline, log)
    try:
        await srv.wait_ready()
        rate = await warm(srv.port)
        n = 200
        conns = await connect_all(srv.port, n)
        go = asyncio.Event()
        tasks = [
            asyncio.create_task(
                request(
                    srv.port,
                    "POST",
                    "/v1/recommend",
                    {"history": [i, (i * 7 + 1) % 3000, (i * 13 + 2) % 3000]},
                    conns[i],
                    go,
                )
            )
            for i in range(n)
        ]
        await asyncio.sleep(0.05)
        go.set()
        res = await asyncio.gather(*tasks)
    finally:
        srv.stop()
    ok = sorted(e for s, _, _, e in res if s == 200)
    refused = sorted(e for s, _, _, e in res if s == 429)
    bad_429 = [
        (b, h) for s, h, b, _ in res if s == 429 and (code(b) != "overloaded" or "retry-after" not in h)
    ]
    other = [(s, b) for s, _, b, _ in res if s not in (200, 429)]
    out = {
        "probe": "burst",
        "requests": n,
        "deadline_s": deadline,
        "beams_per_second": rate,
        "answered": len(ok),
        "answered_slowest_s": ok[-1] if ok else None,
        "refused": len(refused),
        "refused_slowest_ms": refused[-1] * 1e3 if refused else None,
        "refused_median_ms": refused[len(refused) // 2] * 1e3 if refused else None,
        "refused_over_50ms": sum(1 for e in refused if e > 0.05),
        "other_statuses": [s for s, _ in other],
    }
    out["pass"] = (
        not other
        and not bad_429
        and all(e <= deadline for e in ok)
        and out["refused_over_50ms"] == 0
    )
    return out


async def large(args, log):
    deadline = 3.0
    srv = Server(args.server, args.model_dir, deadline, log)
    try:
        await srv.wait_ready()
        rate = await warm(srv.port)
        history = [100 + i for i in range(10)]
        big = {"requests": [{"history": history, "num_beams": 200}] * 64}
        calls = [
            asyncio.create_task(request(srv.port, "POST", "/v1/recommend/batch", big))
            for _ in range(2)
        ]
        await asyncio.sleep(0.5)
        conns = await connect_all(srv.port, 20)
        go = asyncio.Event()
        small = [
            asyncio.create_task(
                request(
                    srv.port,
                    "POST",
                    "/v1/recommend",
                    {"history": [500 + i], "num_beams": 5, "k": 5},
                    conns[i],
                    go,
                )
            )
            for i in range(20)
        ]
        go.set()
        small_res = await asyncio.gather(*small)
        big_res = await asyncio.gather(*calls)
    finally:
        srv.stop()
    small_ok = sorted(e for s, _, _, e in small_res if s == 200)
    entries = {"answered": 0, "overloaded": 0, "deadline_exceeded": 0, "other": 0}
    for s, _, b, _ in big_res:
        if s != 200:
            continue
        for r in b.get("results", []):
            if "items" in r:
                entries["answered"] += 1
            elif code(r) in entries:
                entries[code(r)] += 1
            else:
                entries["other"] += 1
    out = {
        "probe": "large",
        "deadline_s": deadline,
        "beams_per_second": rate,
        "small_requests": len(small_res),
        "small_answered": len(small_ok),
        "small_slowest_s": small_ok[-1] if small_ok else None,
        "small_median_s": small_ok[len(small_ok) // 2] if small_ok else None,
        "small_statuses": sorted({s for s, *_ in small_res}),
        "large_statuses": [s for s, *_ in big_res],
        "large_slowest_s": max(e for *_, e in big_res),
        "large_entries": entries,
    }
    out["pass"] = (
        len(small_ok) == len(small_res)
        and small_ok[-1] <= 1.5
        and all(s == 200 for s, *_ in big_res)
        and out["large_slowest_s"] <= deadline
        and entries["other"] == 0
    )
    return out


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--server", default="target/release/sidrec-server")
    p.add_argument("--probe", choices=["burst", "large", "all"], default="all")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument(
        "--burst-deadlines",
        default="10,3",
        help="deadlines (s) of the burst probe, comma-separated; 10 is the server's default, "
        "a shorter one overloads it further",
    )
    p.add_argument("--json", help="append one JSON line per probe run to this file")
    p.add_argument("--server-log", default=os.devnull)
    args = p.parse_args()
    bursts = [
        (lambda a, l, d=float(d): burst(a, l, d)) for d in args.burst_deadlines.split(",")
    ]
    probes = {"burst": bursts, "large": [large], "all": bursts + [large]}[args.probe]
    failed = False
    with open(args.server_log, "ab") as log:
        for _ in range(args.rounds):
            for probe in probes:
                out = await probe(args, log)
                out["loadavg_1m"] = os.getloadavg()[0]
                out["utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                line = json.dumps(out)
                print(line, flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(line + "\n")
                failed |= not out["pass"]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    asyncio.run(main())
