"""scripts/bench helper: how fast a registration made on replica A is answered by replica B.

propagation.py A_URL B_URL TOKEN CHANGES RATE

Makes CHANGES registrations through A, RATE per second (each one started on schedule, in its
own thread), and for each polls B's check-in every 10 ms until it answers `upload: true`.
Reads B's `controltower_snapshot_documents_read_total` and `..._reloads_total` before and
after. Prints one JSON line: p50/p99/max seconds, the rate achieved, documents read per
change, reloads.
"""

import json
import sys
import threading
import time
import urllib.request

a_url, b_url, token, changes, rate = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])


def metric(url, name):
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def request(method, url, body=None, auth=True):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("content-type", "application/json")
    if auth:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.loads(response.read() or b"null")


latencies = [None] * changes
errors = []
prefix = f"prop-{int(time.time())}"


def one(i):
    device = f"{prefix}-{i:05}"
    try:
        request("PUT", f"{a_url}/v1/devices/{device}", {"reason": "propagation bench"})
        made = time.monotonic()
        deadline = made + 60
        while time.monotonic() < deadline:
            answer = request("POST", f"{b_url}/v1/checkin", {"device_id": device}, auth=False)
            if answer.get("upload"):
                latencies[i] = time.monotonic() - made
                return
            time.sleep(0.01)
        errors.append(f"{device}: not seen by B within 60 s")
    except Exception as error:  # noqa: BLE001 - reported, the run fails
        errors.append(f"{device}: {error}")


reads_before = metric(b_url, "controltower_snapshot_documents_read_total")
reloads_before = metric(b_url, "controltower_snapshot_reloads_total")
threads = []
started = time.monotonic()
for i in range(changes):
    wait = started + i / rate - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    thread = threading.Thread(target=one, args=(i,))
    thread.start()
    threads.append(thread)
issued = time.monotonic() - started
for thread in threads:
    thread.join()
time.sleep(1)
reads = metric(b_url, "controltower_snapshot_documents_read_total") - reads_before
reloads = metric(b_url, "controltower_snapshot_reloads_total") - reloads_before
seen = sorted(x for x in latencies if x is not None)
if errors or not seen:
    print(json.dumps({"errors": errors[:5], "failed": len(errors)}))
    sys.exit(1)


def pct(p):
    return seen[min(len(seen) - 1, int(round(p / 100 * (len(seen) - 1))))]


print(json.dumps({
    "changes": changes,
    "rate_per_s": round(changes / issued if issued > 0 else changes, 1),
    "p50_s": round(pct(50), 3),
    "p99_s": round(pct(99), 3),
    "max_s": round(seen[-1], 3),
    "documents_read_per_change": round(reads / changes, 2),
    "reloads": int(reloads),
}))
