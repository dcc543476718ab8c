#!/usr/bin/env python3
"""Reliability runs of controltower, bounded in time, on loopback (run by scripts/soak).

  held        a sustained check-in load with a registration every second on one replica:
              zero errors, each registration visible on the other replica within the poll interval
  restart     the database killed (SIGKILL) and restarted mid-load: unregistered check-ins never
              fail, registered ones only while it is down, recovery within 2 poll intervals, and
              every acknowledged registration and audit entry is still there
  sigterm     SIGTERM mid-load: zero failed requests, exit 0 within the drain window

(scripts/soak also runs scripts/api-fuzz — schemathesis with every check — with more examples.)

Prints a table; exits 1 if a target is missed.
"""

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

CT = os.environ.get("CONTROLTOWER", "target/release/controltower")
PYTHON = os.environ["SECANTUS_PYTHON"]
SECONDS = int(os.environ.get("SOAK_SECONDS", "60"))
TOKEN = "soak-admin-token-0123456789"
POLL = 1.0
results = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Database:
    def __init__(self, storage=":memory:", extra=()):
        self.port, self.storage, self.extra, self.process = free_port(), storage, list(extra), None

    @property
    def uri(self):
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self):
        self.process = subprocess.Popen(
            [PYTHON, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port), "--storage-path", self.storage,
             "--log-level", "ERROR", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()


class Service:
    def __init__(self, env):
        self.port = free_port()
        base = {"HOST": "127.0.0.1", "PORT": str(self.port), "ADMIN_TOKENS": f"soak={TOKEN}", "LOG_LEVEL": "warn",
                "SNAPSHOT_POLL_INTERVAL": f"{int(POLL * 1000)}ms", "MONGODB_TIMEOUT": "500ms", "PATH": os.environ["PATH"]}
        base.update(env)
        self.process = subprocess.Popen([CT], env=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if call(self.port, "GET", "/healthz/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("controltower never became ready")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait()


def call(port, method, path, body=None, token=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if own:
        conn.close()
    return response.status, (json.loads(data) if data else None)


def register(port, device, **fields):
    return call(port, "PUT", f"/v1/devices/{device}", {"reason": "soak", **fields}, TOKEN)[0]


class Load:
    """Threads posting check-ins on keep-alive connections; records (time, registered?, status)."""

    def __init__(self, port, registered=(), share=0.0, threads=8):
        self.port, self.registered, self.share = port, list(registered), share
        self.records, self.lock, self.stop_flag = [], threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        local = []
        while not self.stop_flag.is_set():
            registered = self.registered and random.random() < self.share
            device = random.choice(self.registered) if registered else f"anon-{random.randrange(10**9)}"
            try:
                status = call(self.port, "POST", "/v1/checkin", {"device_id": device, "platform": "ios"}, conn=conn)[0]
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            local.append((time.time(), bool(registered), status))
        with self.lock:
            self.records.extend(local)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join()


def report(name, ok, figures):
    results.append((name, ok, figures))
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {figures}", flush=True)


def held():
    db = Database()
    db.start()
    a = Service({"MONGODB_URI": db.uri})
    b = Service({"MONGODB_URI": db.uri})
    try:
        latencies, failed_registrations = [], 0
        with Load(a.port, threads=8) as load:
            start = time.time()
            i = 0
            while time.time() - start < SECONDS:
                device = f"soak-held-{i}"
                i += 1
                began = time.time()
                if register(a.port, device) != 201:
                    failed_registrations += 1
                    continue
                while time.time() - began < 5:
                    if call(b.port, "POST", "/v1/checkin", {"device_id": device})[1].get("upload"):
                        break
                    time.sleep(0.02)
                latencies.append(time.time() - began)
                time.sleep(max(0.0, 1.0 - (time.time() - began)))
        errors = sum(1 for _, _, s in load.records if s != 200)
        worst = max(latencies) if latencies else float("inf")
        ok = errors == 0 and failed_registrations == 0 and worst <= POLL + 0.5
        report("held", ok, f"{len(load.records)} check-ins in {SECONDS}s ({len(load.records) / SECONDS:.0f}/s), {errors} errors; "
               f"{len(latencies)} registrations, visible on the other replica after {sorted(latencies)[len(latencies) // 2]:.2f}s median, "
               f"{worst:.2f}s worst (poll {POLL}s)")
    finally:
        a.stop(), b.stop(), db.stop()


def restart():
    storage = tempfile.mkdtemp(prefix="soak-db-")
    db = Database(storage, ["--sync-on-commit"])
    db.start()
    service = Service({"MONGODB_URI": db.uri})
    try:
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        registered = [f"soak-reg-{i}" for i in range(50)]
        for device in registered:
            assert register(service.port, device, max_uploads="unlimited", expires_at=expires) == 201
        acknowledged, attempts = list(registered), 0
        stop = threading.Event()

        def registrar():
            nonlocal attempts
            i = 0
            while not stop.is_set():
                device = f"soak-during-{i}"
                i += 1
                attempts += 1
                try:
                    if register(service.port, device) in (200, 201):
                        acknowledged.append(device)
                except OSError:
                    pass
                time.sleep(0.25)

        worker = threading.Thread(target=registrar, daemon=True)
        with Load(service.port, registered, share=0.05, threads=8) as load:
            worker.start()
            time.sleep(8)
            down = time.time()
            db.kill()
            time.sleep(8)
            db.start()
            up = time.time()
            time.sleep(12)
            stop.set()
            worker.join()
        records = load.records
        unregistered_failures = sum(1 for _, r, s in records if not r and s != 200)
        registered_after = sorted(t for t, r, s in records if r and s == 200 and t > up)
        recovery = (registered_after[0] - up) if registered_after else float("inf")
        outside = sum(1 for t, r, s in records if r and s != 200 and not (down <= t <= up + recovery))
        during = sum(1 for t, r, s in records if r and s == 503 and down <= t <= up)
        missing = [d for d in acknowledged if call(service.port, "GET", f"/v1/devices/{d}", token=TOKEN)[0] != 200]
        audit = call(service.port, "GET", "/v1/audit?limit=1000", token=TOKEN)[1]["items"]
        audited = {e["device_id"] for e in audit}
        unaudited = [d for d in acknowledged if d not in audited]
        ok = unregistered_failures == 0 and outside == 0 and recovery <= 2 * POLL and not missing and not unaudited
        report("restart", ok, f"{len(records)} check-ins; unregistered failures {unregistered_failures}; registered 503s while down {during}, "
               f"outside the outage {outside}; recovery {recovery:.2f}s after the database was back (limit {2 * POLL:.0f}s); "
               f"{len(acknowledged)} acknowledged registrations ({len(registered)} before, {len(acknowledged) - len(registered)} of {attempts} tried during the run), "
               f"{len(missing)} lost, {len(unaudited)} without audit entry")
    finally:
        service.stop(), db.stop()


def sigterm():
    db = Database()
    db.start()
    drain = 3.0
    service = Service({"MONGODB_URI": db.uri, "DRAIN_SECONDS": f"{drain}s"})
    try:
        with Load(service.port, threads=16) as load:
            time.sleep(3)
            signalled = time.time()
            service.process.send_signal(signal.SIGTERM)
            time.sleep(drain - 0.5)
        code = service.process.wait(timeout=drain + 10)
        exited = time.time() - signalled
        after = [s for t, _, s in load.records if t >= signalled]
        failures = sum(1 for _, _, s in load.records if s != 200)
        ok = failures == 0 and code == 0 and exited <= drain + 5.5
        report("sigterm", ok, f"{len(load.records)} check-ins, {len(after)} after SIGTERM, {failures} failed; exit code {code} after {exited:.2f}s (drain {drain}s)")
    finally:
        service.stop(), db.stop()


if __name__ == "__main__":
    chosen = sys.argv[1:] or ["held", "restart", "sigterm"]
    for name in chosen:
        globals()[name]()
    print()
    print("| run | result | figures |")
    print("| --- | --- | --- |")
    for name, ok, figures in results:
        print(f"| {name} | {'ok' if ok else 'FAILED'} | {figures} |")
    sys.exit(0 if all(ok for _, ok, _ in results) else 1)
