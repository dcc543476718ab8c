"""scripts/bench helper: one full reload of a replica, forced the way a gap in its change
feed forces it (a `ChangeStreamHistoryLost` fail point on its next getMore): what every
registration change cost every replica in the previous release, which reloaded on each.

force_reload.py MONGO_URI APP_NAME REPLICA_URL → prints JSON: reload seconds (from the
replica's own metric), documents it read.
"""

import json
import sys
import time
import urllib.request

from pymongo import MongoClient

uri, app_name, url = sys.argv[1], sys.argv[2], sys.argv[3]


def metric(name):
    text = urllib.request.urlopen(url + "/metrics").read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


reloads = metric("controltower_snapshot_reloads_total")
seconds = metric("controltower_snapshot_reload_duration_seconds_sum")
reads = metric("controltower_snapshot_documents_read_total")
client = MongoClient(uri)
client.admin.command({
    "configureFailPoint": "failCommand",
    "mode": {"times": 1},
    "data": {"failCommands": ["getMore"], "errorCode": 286, "appName": app_name},
})
started = time.time()
while time.time() < started + 900:
    time.sleep(0.2)
    if metric("controltower_snapshot_reloads_total") > reloads:
        print(json.dumps({
            "reload_s": round(metric("controltower_snapshot_reload_duration_seconds_sum") - seconds, 2),
            "documents_read": int(metric("controltower_snapshot_documents_read_total") - reads),
        }))
        sys.exit(0)
print(json.dumps({"error": "no reload within 900 s"}))
sys.exit(1)
