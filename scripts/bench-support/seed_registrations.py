"""scripts/bench helper (SecantusDB's pymongo).

seed_registrations.py URI N          inserts N active registrations
"""

import datetime
import sys

from pymongo import MongoClient

uri, what = sys.argv[1], sys.argv[2]
db = MongoClient(uri).controltower


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
