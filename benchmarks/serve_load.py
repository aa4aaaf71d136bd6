"""Load on the translation service (Ray Serve): request batching, and a replica killed under load.

    python benchmarks/serve_load.py [--requests 256 --concurrency 32] [--kill]

    .venv/bin/python benchmarks/serve_load.py [--requests 256 --concurrency 32] [--direction lmx->midi] \\
        [--batch 16] [--cpus 2] [--model-cpus 0.5] [--out summary.json]
    .venv/bin/python benchmarks/serve_load.py --kill [--duration 40 --kill-after 10 --concurrency 16]

A bounded asyncio client (aiohttp, at most ``--concurrency`` requests in flight) posts
multipart ``POST /v1/translate`` (``response=json``) to a service deployed on a local Ray
(``ray.init(num_cpus=--cpus)``, 2 by default: this machine's cores) and records each
request's latency and status. Inputs come from real scores (music21's Bach chorales,
two-measure excerpts of four chorales): ``lmx->midi`` posts the excerpt's LMX text with
``engine=model`` (the model, not the converter), ``image->lmx`` one engraved staff system
(PNG), ``audio->midi`` a FluidSynth rendering (3.5 s WAV).

Batching run (default): the same app deployed twice on the same Ray and Serve, one after
the other, with one model replica (min = max = 1) and the same CPU reservations and
concurrency: ``max_batch_size=--batch`` (``batch_wait_timeout_s`` 0.05) vs ``max_batch_size=1``
(the baseline). Each is warmed up, then timed over ``--requests`` requests. Prints
requests/s, p50 / p99 latency and errors for each, and the throughput ratio (goal >= 3x,
zero errors).

Fault run (``--kill``): two model replicas (min = max = 2), steady load for ``--duration`` s;
``--kill-after`` s in, one TranslatorModel replica process gets SIGKILL. Prints the failed
fraction of all requests (goal < 1 %: the ingress retries a request whose replica died)
and the recovery time: from the kill until Serve runs 2 replicas again (the killed actor
gone, a new one ALIVE, ``serve.status`` RUNNING x2) and a request succeeds (goal < 30 s).

Which direction (default ``lmx->midi``): request batching pays where the per-request work is
the batched decode loop. Measured on this 2-core CPU box (no GPU, one torch thread per
replica), first in-process (``Translator.translate_many``, per-item time at n=1 vs n=16),
then through Serve with this script (concurrency 16; ratio batched/unbatched):

* ``audio->midi``: 410-620 ms -> 320-470 ms per item (1.3x); Serve 1.05x (3.2 vs 3.1 req/s, 48 requests).
  ~90 % of the time is the DAC audio-codec encoder (a conv stack, run once per request,
  compute-bound); the MIDI decoded from 3.5 s is a few dozen tokens.
* ``image->lmx``: 80-96 ms -> 46-48 ms (~2x); Serve 1.9-2.9x (~16 vs ~6.4 req/s). The decode
  loop batches ~4x, but staff detection, cropping and RQ-VAE encoding (~25 ms) run per request.
* ``lmx->midi`` (``engine=model``): 100-131 ms -> 31-33 ms (3.1-4.3x); through Serve, with the
  model replica holding requests until its decoder is free (full batches): 4.40x at
  concurrency 32 (21.8 vs 4.96 req/s, p50 1.46 s vs 6.49 s), 2.5-3.2x at concurrency 16
  (17-20 vs 6.3-6.9 req/s; batches are then ~10 of 16). Nearly all decode loop, tiny uploads.

With batching the single replica's decode thread is the bottleneck (one core busy, the other
mostly idle; the per-process CPU table printed for each configuration shows it); without it,
each request also pays its own encoder pass, decode-loop setup and Serve's per-call cost.
Each run prints CPU milliseconds per request by process (and "not this run" when other
programs load the machine: the numbers are then noisy, read the ratio).

Functions (:func:`make_payloads`, :func:`run_load`, :func:`summarize`,
:func:`kill_one_replica`, :func:`wait_recovered`, :func:`replica_actors`) are importable:
``tests/test_serve_faults.py`` reuses them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = "TranslatorModel"
DIRECTIONS = ("image->lmx", "audio->midi", "lmx->midi")
# Two-measure excerpts of Bach chorales from music21's corpus: one staff system each.
EXCERPTS = (("bach/bwv66.6", 1, 2), ("bach/bwv269", 1, 2), ("bach/bwv347", 1, 2), ("bach/bwv153.1", 1, 2))


def progress(message: str) -> None:
    print(f"[serve_load] {message}", flush=True)


# -- inputs -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Payload:
    """One prepared multipart request body for ``POST /v1/translate``."""

    name: str
    body: bytes
    content_type: str
    size: int  # bytes of the uploaded file


def multipart(filename: str, data: bytes, fields: dict[str, str]) -> Payload:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return Payload(name=filename, body=b"".join(parts), content_type=f"multipart/form-data; boundary={boundary}",
                   size=len(data))


def excerpt_musicxml(work: str, first: int, last: int) -> bytes:
    from music21 import corpus
    from music21.musicxml.m21ToXml import GeneralObjectExporter

    return GeneralObjectExporter(corpus.parse(work).measures(first, last)).parse()


def make_payloads(direction: str = "lmx->midi", *, count: int = 4, audio_seconds: float = 3.5,
                  response: str = "json") -> list[Payload]:
    """``count`` request bodies for ``direction`` made from real score excerpts (see EXCERPTS)."""
    from unimusic.inference import score_to_lmx, score_to_notes, notes_to_audio, score_to_pages
    from unimusic.io_files import Audio, Lmx, Pages, encode_output

    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}: use one of {', '.join(DIRECTIONS)}")
    out = []
    for work, first, last in (EXCERPTS * count)[:count]:
        xml = excerpt_musicxml(work, first, last)
        stem = work.replace("/", "_")
        if direction == "image->lmx":
            page = score_to_pages(xml, source=stem)[0]
            data = encode_output(Pages(images=(page,)), f"{stem}.png")[0][1]
            out.append(multipart(f"{stem}.png", data, {"to": "lmx", "response": response}))
        elif direction == "audio->midi":
            notes = [n for n in score_to_notes(xml, source=stem) if n.start < audio_seconds]
            samples = notes_to_audio(notes, sample_rate=22050)[: int(audio_seconds * 22050)]
            data = encode_output(Audio(samples=samples, sample_rate=22050), f"{stem}.wav")[0][1]
            out.append(multipart(f"{stem}.wav", data, {"to": "midi", "response": response}))
        else:
            data = encode_output(Lmx(tokens=tuple(score_to_lmx(xml, source=stem))), f"{stem}.lmx")[0][1]
            out.append(multipart(f"{stem}.lmx", data, {"to": "midi", "response": response, "engine": "model"}))
    return out


# -- the client -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Record:
    index: int
    start: float  # time.monotonic()
    end: float
    status: int  # HTTP status; 0: no answer (connection error, client timeout)
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def ok(self) -> bool:
        return self.status == 200


async def _load(url: str, payloads: list[Payload], concurrency: int, requests: int | None,
                duration_s: float | None, timeout_s: float) -> list[Record]:
    import aiohttp

    endpoint = url.rstrip("/") + "/v1/translate"
    sem = asyncio.Semaphore(concurrency)
    records: list[Record] = []
    deadline = None if duration_s is None else time.monotonic() + duration_s
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:

        async def one(i: int) -> None:
            p = payloads[i % len(payloads)]
            t0 = time.monotonic()
            try:
                async with session.post(endpoint, data=p.body, headers={"Content-Type": p.content_type}) as r:
                    body = await r.read()
                    error = None
                    if r.status != 200:
                        try:
                            error = json.loads(body)["error"]["type"]
                        except Exception:  # noqa: BLE001
                            error = body[:200].decode(errors="replace")
                    records.append(Record(i, t0, time.monotonic(), r.status, error))
            except Exception as exc:  # noqa: BLE001 - counted as a failed request
                records.append(Record(i, t0, time.monotonic(), 0, f"{type(exc).__name__}: {exc}"))
            finally:
                sem.release()

        tasks = []
        i = 0
        while (requests is None or i < requests) and (deadline is None or time.monotonic() < deadline):
            await sem.acquire()
            if deadline is not None and time.monotonic() >= deadline:
                sem.release()
                break
            tasks.append(asyncio.create_task(one(i)))
            i += 1
        await asyncio.gather(*tasks)
    return sorted(records, key=lambda r: r.index)


def run_load(url: str, payloads: list[Payload], *, concurrency: int = 16, requests: int | None = 200,
             duration_s: float | None = None, timeout_s: float = 180.0) -> list[Record]:
    """Send ``requests`` requests (or keep sending for ``duration_s``), at most ``concurrency`` in
    flight, cycling through ``payloads``; one Record per request. Blocking (its own event loop)."""
    if requests is None and duration_s is None:
        raise ValueError("give requests or duration_s")
    return asyncio.run(_load(url, payloads, concurrency, requests, duration_s, timeout_s))


def summarize(records: list[Record]) -> dict:
    """Requests/s (successful answers over the wall time of the run), latency percentiles, errors."""
    import numpy as np

    if not records:
        return {"requests": 0, "ok": 0, "errors": 0, "failed_fraction": 0.0}
    ok = [r for r in records if r.ok]
    wall = max(r.end for r in records) - min(r.start for r in records)
    lat = np.array([r.latency for r in ok]) if ok else np.array([float("nan")])
    kinds: dict[str, int] = {}
    for r in records:
        if not r.ok:
            key = f"{r.status} {r.error}"
            kinds[key] = kinds.get(key, 0) + 1
    return {"requests": len(records), "ok": len(ok), "errors": len(records) - len(ok),
            "failed_fraction": (len(records) - len(ok)) / len(records), "error_kinds": kinds,
            "wall_s": round(wall, 3), "rps": round(len(ok) / wall, 3) if wall > 0 else 0.0,
            "p50_s": round(float(np.percentile(lat, 50)), 4), "p99_s": round(float(np.percentile(lat, 99)), 4),
            "mean_s": round(float(lat.mean()), 4)}


def post_once(url: str, payload: Payload, *, timeout_s: float = 60.0) -> int:
    """One blocking request (urllib); its HTTP status, 0 when there was no answer."""
    req = urllib.request.Request(url.rstrip("/") + "/v1/translate", data=payload.body, method="POST",
                                 headers={"Content-Type": payload.content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except Exception:  # noqa: BLE001
        return 0


# -- replicas ---------------------------------------------------------------------------------


def replica_class_name(app_name: str, deployment: str = MODEL) -> str:
    return f"ServeReplica:{app_name}:{deployment}"


def replica_actors(app_name: str, deployment: str = MODEL) -> list[dict]:
    """ALIVE replica actors of a deployment: ``[{"actor_id", "pid"}]``. Reads the GCS actor table
    (works without the dashboard, as in the tests' Ray); falls back to the state API."""
    cls = replica_class_name(app_name, deployment)
    try:
        from ray._private.state import actors as gcs_actors

        table = gcs_actors()
        return [{"actor_id": a["ActorID"], "pid": int(a["Pid"])} for a in table.values()
                if a.get("ActorClassName") == cls and a.get("State") == "ALIVE" and a.get("Pid")]
    except (ImportError, AttributeError, KeyError, TypeError):
        from ray.util.state import list_actors

        rows = list_actors(filters=[("class_name", "=", cls), ("state", "=", "ALIVE")])
        return [{"actor_id": a.actor_id, "pid": int(a.pid)} for a in rows]


def kill_one_replica(app_name: str, deployment: str = MODEL) -> dict:
    """SIGKILL the process of one ALIVE replica (this machine); ``{"actor_id", "pid", "t"}``
    with ``t`` the monotonic time of the kill."""
    alive = replica_actors(app_name, deployment)
    if not alive:
        raise RuntimeError(f"no ALIVE {replica_class_name(app_name, deployment)} actor to kill")
    victim = alive[0]
    os.kill(victim["pid"], signal.SIGKILL)
    return {**victim, "t": time.monotonic()}


def running_replicas(app_name: str, deployment: str = MODEL) -> int:
    """Replicas Serve reports RUNNING for the deployment."""
    from ray import serve

    try:
        status = serve.status().applications[app_name].deployments[deployment]
    except KeyError:
        return 0
    return int(status.replica_states.get("RUNNING", 0))


def wait_recovered(app_name: str, url: str, payload: Payload, *, killed: dict, replicas: int = 2,
                   timeout_s: float = 120.0, poll_s: float = 0.25) -> float:
    """Seconds from ``killed["t"]`` until ``replicas`` replicas run again (the killed actor no
    longer ALIVE, ``replicas`` ALIVE actors, Serve reporting them RUNNING) and a request
    succeeds; TimeoutError after ``timeout_s``."""
    deadline = killed["t"] + timeout_s
    while time.monotonic() < deadline:
        alive = replica_actors(app_name)
        ids = {a["actor_id"] for a in alive}
        if killed["actor_id"] not in ids and len(ids) >= replicas and running_replicas(app_name) >= replicas:
            if post_once(url, payload, timeout_s=max(1.0, deadline - time.monotonic())) == 200:
                return time.monotonic() - killed["t"]
        time.sleep(poll_s)
    raise TimeoutError(f"{app_name}: not recovered {timeout_s:g} s after the kill")


def fault_run(app_name: str, url: str, payloads: list[Payload], *, concurrency: int = 8, duration_s: float = 40.0,
              kill_after_s: float = 10.0, replicas: int = 2, recovery_timeout_s: float = 90.0) -> dict:
    """Steady load for ``duration_s``; ``kill_after_s`` in, SIGKILL one model replica and wait for
    recovery (in a thread beside the load). Summary of the load plus ``recovery_s`` and the kill."""
    fault: dict = {}

    def killer() -> None:
        time.sleep(kill_after_s)
        try:
            fault["killed"] = kill_one_replica(app_name)
            fault["recovery_s"] = wait_recovered(app_name, url, payloads[0], killed=fault["killed"],
                                                 replicas=replicas, timeout_s=recovery_timeout_s)
        except Exception as exc:  # noqa: BLE001 - reported in the summary
            fault["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=killer, name="killer", daemon=True)
    thread.start()
    records = run_load(url, payloads, concurrency=concurrency, requests=None, duration_s=duration_s)
    thread.join(timeout=recovery_timeout_s + kill_after_s)
    summary = summarize(records)
    killed = fault.get("killed")
    if killed:
        after = [r for r in records if r.end >= killed["t"]]
        summary["after_kill"] = summarize(after)
        summary["killed_pid"] = killed["pid"]
    summary["recovery_s"] = round(fault["recovery_s"], 2) if "recovery_s" in fault else None
    summary["fault_error"] = fault.get("error")
    return summary


# -- the runs ----------------------------------------------------------------------------------


def _role(pid: int, cmd: str) -> str | None:
    if pid == os.getpid():
        return "client (driver)"
    if cmd.startswith("ray::"):
        title = cmd.split()[0][5:]
        if title.startswith("IDLE"):
            return "idle Ray workers"
        return title.split(".")[0]  # "ServeController.listen_for_change" -> "ServeController"
    if "raylet" in cmd:
        return "raylet"
    if "gcs_server" in cmd:
        return "gcs_server"
    if "/ray/" in cmd or "ray/_private" in cmd or "ray.util" in cmd:
        return "other Ray processes"
    return None


def cpu_snapshot() -> dict:
    """Per process of this run (this client and the Ray it started: its process tree):
    ``{pid: (role, CPU seconds user + system so far)}``, plus key ``"machine"``: the busy CPU
    seconds of the whole machine (so other programs' load shows up). Roles: the client,
    each Serve replica / proxy / controller (``ray::`` titles), raylet, GCS, other Ray processes."""
    import psutil

    me = psutil.Process()
    out: dict = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            cmd = " ".join(proc.cmdline()) or proc.name()
            role = _role(proc.pid, cmd) or "other processes of this run"
            t = proc.cpu_times()
            out[proc.pid] = (role, t.user + t.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    busy = psutil.cpu_times()
    out["machine"] = ("machine", busy.user + busy.system + getattr(busy, "nice", 0.0) + getattr(busy, "irq", 0.0)
                      + getattr(busy, "softirq", 0.0))
    return out


def cpu_per_request(before: dict, after: dict, requests: int) -> dict[str, float]:
    """CPU milliseconds per request by role between two :func:`cpu_snapshot` calls (per process,
    so a process started in between counts whole; roles of 1 ms or more)."""
    out: dict[str, float] = {}
    mine = 0.0
    for pid, (role, cpu) in after.items():
        if pid == "machine":
            continue
        used = cpu - (before[pid][1] if pid in before else 0.0)
        mine += used
        out[role] = out.get(role, 0.0) + 1000 * used / max(1, requests)
    if "machine" in before and "machine" in after:
        others = after["machine"][1] - before["machine"][1] - mine
        out["not this run (other programs)"] = 1000 * max(0.0, others) / max(1, requests)
    return dict(sorted(((k, round(v, 1)) for k, v in out.items() if v >= 1.0), key=lambda kv: -kv[1]))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def line(label: str, s: dict) -> str:
    return (f"{label:<22} {s['rps']:7.2f} req/s   p50 {s['p50_s'] * 1000:7.0f} ms   p99 {s['p99_s'] * 1000:7.0f} ms   "
            f"errors {s['errors']}/{s['requests']}" + (f" {s['error_kinds']}" if s["errors"] else ""))


def bench_batching(args, port: int, payloads: list[Payload]) -> dict:
    from ray import serve

    from serve.app import ServeSettings, deploy

    name, prefix = "unimusic-bench", "/bench"
    results = {}
    for label, batch in ((f"max_batch_size={args.batch}", args.batch), ("max_batch_size=1", 1)):
        settings = ServeSettings(port=port, min_replicas=1, max_replicas=1, max_batch_size=batch,
                                 batch_wait_timeout_s=args.batch_wait, model_cpus=args.model_cpus,
                                 ingress_cpus=args.ingress_cpus, request_timeout_s=300.0)
        t0 = time.monotonic()
        url = deploy(settings, name=name, route_prefix=prefix)
        progress(f"{label}: deployed in {time.monotonic() - t0:.1f} s; warming up")
        warm = summarize(run_load(url, payloads, concurrency=args.concurrency, requests=max(2 * args.concurrency, 16)))
        if warm["errors"]:
            progress(f"{label}: warm-up errors {warm['error_kinds']}")
        before = cpu_snapshot()
        s = summarize(run_load(url, payloads, concurrency=args.concurrency, requests=args.requests))
        s["cpu_ms_per_request"] = cpu_per_request(before, cpu_snapshot(), s["requests"])
        s["batch"] = batch
        results[label] = s
        progress(line(label, s))
        serve.delete(name)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per configuration")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (both configurations)")
    parser.add_argument("--direction", choices=DIRECTIONS, default="lmx->midi")
    parser.add_argument("--batch", type=int, default=16, help="max_batch_size of the batching configuration")
    parser.add_argument("--batch-wait", type=float, default=0.05, help="batch_wait_timeout_s")
    parser.add_argument("--payloads", type=int, default=4, help="distinct inputs (score excerpts)")
    parser.add_argument("--cpus", type=int, default=2, help="ray.init(num_cpus=...)")
    parser.add_argument("--model-cpus", type=float, default=0.5, help="num_cpus reserved per model replica")
    parser.add_argument("--ingress-cpus", type=float, default=0.25)
    parser.add_argument("--kill", action="store_true", help="the fault run instead of the batching comparison")
    parser.add_argument("--duration", type=float, default=40.0, help="--kill: seconds of load")
    parser.add_argument("--kill-after", type=float, default=10.0, help="--kill: seconds of load before the kill")
    parser.add_argument("--out", help="write a JSON summary here")
    args = parser.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    works = ", ".join(w for w, *_ in EXCERPTS[: args.payloads])
    progress(f"making {args.payloads} {args.direction} inputs from {works}")
    payloads = make_payloads(args.direction, count=args.payloads)
    progress(f"upload sizes {[p.size for p in payloads]} bytes")
    # log_to_driver=False: the replicas' per-request access logs stay in their files instead of
    # being forwarded to (and printed by) this process, which is also the load client
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    port = free_port()
    summary: dict = {"direction": args.direction, "concurrency": args.concurrency, "cpus": args.cpus,
                     "model_cpus": args.model_cpus, "ingress_cpus": args.ingress_cpus}
    try:
        if args.kill:
            from serve.app import ServeSettings, deploy

            name = "unimusic-kill"
            settings = ServeSettings(port=port, min_replicas=2, max_replicas=2, max_batch_size=args.batch,
                                     batch_wait_timeout_s=args.batch_wait, model_cpus=args.model_cpus,
                                     ingress_cpus=args.ingress_cpus, request_timeout_s=300.0)
            url = deploy(settings, name=name, route_prefix="/kill")
            deadline = time.monotonic() + 120
            while len(replica_actors(name)) < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            progress(f"2 replicas up (pids {[a['pid'] for a in replica_actors(name)]}); warming up")
            run_load(url, payloads, concurrency=args.concurrency, requests=2 * args.concurrency)
            progress(f"load for {args.duration:g} s at concurrency {args.concurrency}; SIGKILL one replica "
                     f"{args.kill_after:g} s in")
            s = fault_run(name, url, payloads, concurrency=args.concurrency, duration_s=args.duration,
                          kill_after_s=args.kill_after)
            summary["fault"] = s
            print(f"\nfault run ({args.direction}, 2 model replicas, concurrency {args.concurrency}, "
                  f"{args.duration:g} s, SIGKILL pid {s.get('killed_pid')} at {args.kill_after:g} s):")
            print(line("all requests", s))
            if "after_kill" in s:
                print(line("ended after the kill", s["after_kill"]))
            print(f"failed requests: {s['errors']}/{s['requests']} = {100 * s['failed_fraction']:.2f} % (goal < 1 %)")
            rec = s["recovery_s"]
            print(f"recovery (kill -> 2 replicas running and a request answered): "
                  f"{'%.1f s' % rec if rec is not None else 'not recovered: ' + str(s['fault_error'])} (goal < 30 s)")
        else:
            results = bench_batching(args, port, payloads)
            summary["batching"] = results
            batched, single = results[f"max_batch_size={args.batch}"], results["max_batch_size=1"]
            ratio = batched["rps"] / single["rps"] if single["rps"] else float("nan")
            summary["throughput_ratio"] = round(ratio, 3)
            print(f"\n{args.direction}, 1 model replica ({args.model_cpus:g} CPU), concurrency {args.concurrency}, "
                  f"{args.requests} requests each, ray num_cpus={args.cpus}:")
            print(line(f"max_batch_size={args.batch}", batched))
            print(line("max_batch_size=1", single))
            for label, r in ((f"max_batch_size={args.batch}", batched), ("max_batch_size=1", single)):
                total = sum(r["cpu_ms_per_request"].values())
                print(f"CPU ms per request, {label} (total {total:.0f}; wall ms per request x {args.cpus} cores = "
                      f"{1000 * args.cpus / max(r['rps'], 1e-9):.0f}): "
                      + ", ".join(f"{k} {v:g}" for k, v in r["cpu_ms_per_request"].items()))
            print(f"throughput ratio batched / unbatched: {ratio:.2f}x (goal >= 3x)")
    finally:
        serve.shutdown()
        ray.shutdown()
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
        progress(f"wrote {args.out}")


if __name__ == "__main__":
    main()
