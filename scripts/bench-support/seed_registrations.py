"""scripts/bench helper (SecantusDB's pymongo).

seed_registrations.py URI N          inserts N active registrations (and the generation)
seed_registrations.py URI bump METRICS_URL
                                     increases the generation, waits until the service reloaded,
                                     prints the reload's duration from its metrics
"""

import datetime
import sys
import time
import urllib.request

from pymongo import MongoClient

uri, what = sys.argv[1], sys.argv[2]
db = MongoClient(uri).controltower


def metric(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


if what == "bump":
    metrics_url = sys.argv[3]
    text = urllib.request.urlopen(metrics_url).read().decode()
    count = metric(text, "controltower_snapshot_reloads_total")
    seconds = metric(text, "controltower_snapshot_reload_duration_seconds_sum")
    db.meta.update_one({"_id": "registrations"}, {"$inc": {"generation": 1}}, upsert=True)
    bumped = time.time()
    deadline = time.time() + 600
    while time.time() < deadline:
        time.sleep(0.2)
        text = urllib.request.urlopen(metrics_url).read().decode()
        if metric(text, "controltower_snapshot_reloads_total") > count:
            took = metric(text, "controltower_snapshot_reload_duration_seconds_sum") - seconds
            print(f"{took:.2f}", file=sys.stdout)
            print(f"reload: {took:.2f}s by the metric, {time.time() - bumped:.2f}s from the change to the reload's end", file=sys.stderr)
            sys.exit(0)
    print("timeout")
    sys.exit(1)

n = int(what)
now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
batch = []
for i in range(n):
    batch.append({
        "_id": f"device-{i:08}-a1b2c3d4",
        "reason": "bench",
        "ticket_ref": None,
        "expires_at": None,
        "max_uploads": 1,
        "log_since": None,
        "platforms": [],
        "app_version_min": None,
        "app_version_max": None,
        "status": "active",
        "uploads": 0,
        "created_by": "bench",
        "updated_by": "bench",
        "created_at": now,
        "updated_at": now,
        "last_checkin_at": None,
    })
    if len(batch) == 10000:
        db.devices.insert_many(batch, ordered=False)
        batch = []
if batch:
    db.devices.insert_many(batch, ordered=False)
db.meta.update_one({"_id": "registrations"}, {"$set": {"generation": 1}}, upsert=True)
