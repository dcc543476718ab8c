"""moto's server, with the target-health lifecycle of a real ELBv2 target group.

moto answers DescribeTargetHealth with `healthy` for every registered IP target at once and
forgets a deregistered one at once. A real target group does neither: a new target is
`initial` until its health checks pass, and a deregistered one is `draining` for the
group's deregistration delay. The end-to-end tests of infra-gen's load-balancer checks need
both, so this wrapper keeps moto's models and adds, per target group:

- `draining` (Target.DeregistrationInProgress) for `deregistration_delay.timeout_seconds`
  (the group's attribute, default 300) after a target is deregistered, as AWS does;
- `initial` (Elb.RegistrationInProgress) for `moto:initial-seconds` (a tag of the group,
  default 0: healthy at once, as plain moto) after a target is registered;
- targets that never pass (`moto:stuck: initial` tag): the group's health check never
  succeeds, e.g. a wrong health-check port.

Run as `python scripts/moto-server.py -H 127.0.0.1 -p PORT` (the arguments of moto_server).
"""

import sys
import time

from moto.elbv2 import models
from moto.server import main

_registered = {}  # (group arn, target id) -> registration time
_deregistered = {}  # (group arn, target id) -> (deregistration time, port)

_original_register = models.FakeTargetGroup.register
_original_deregister = models.FakeTargetGroup.deregister
_original_health_for = models.FakeTargetGroup.health_for


def _tag(group, key):
    backend = models.elbv2_backends[group.account_id][group.region_name]
    return backend.tagging_service.get_tag_dict_for_resource(group.arn).get(key)


def _delay(group):
    value = group.attributes.get("deregistration_delay.timeout_seconds", "300")
    try:
        return float(value)
    except (TypeError, ValueError):
        return 300.0


def register(self, targets):
    _original_register(self, targets)
    now = time.monotonic()
    for target in targets:
        _registered.setdefault((self.arn, target["Id"]), now)
        _deregistered.pop((self.arn, target["Id"]), None)


def deregister(self, targets):
    ports = {t["Id"]: self.targets.get(t["Id"], {}).get("Port", self.port) for t in targets}
    _original_deregister(self, targets)
    now = time.monotonic()
    for target in targets:
        _registered.pop((self.arn, target["Id"]), None)
        _deregistered[(self.arn, target["Id"])] = (now, ports.get(target["Id"]))


def health_for(self, target, ec2_backend):
    key = (self.arn, target["Id"])
    if key in _deregistered and target["Id"] not in self.targets:
        since, port = _deregistered[key]
        if time.monotonic() - since < _delay(self):
            return models.FakeHealthStatus(
                target["Id"],
                port,
                self.health_check_port,
                "draining",
                "Target.DeregistrationInProgress",
                "Target deregistration is in progress",
            )
    status = _original_health_for(self, target, ec2_backend)
    if status.status != "healthy":
        return status
    initial = float(_tag(self, "moto:initial-seconds") or 0)
    stuck = _tag(self, "moto:stuck") == "initial"
    registered = _registered.get(key, 0.0)
    if stuck or time.monotonic() - registered < initial:
        status.status = "initial"
        status.reason = "Elb.RegistrationInProgress"
        status.description = "Target registration is in progress"
    return status


_original_describe = models.ELBv2Backend.describe_target_health


def describe_target_health(self, target_group_arn, targets):
    """Without a target list, AWS lists the draining targets too."""
    if not targets:
        group = self.target_groups.get(target_group_arn)
        if group is not None:
            draining = [
                {"Id": target_id, "Port": port}
                for (arn, target_id), (since, port) in _deregistered.items()
                if arn == target_group_arn
                and target_id not in group.targets
                and time.monotonic() - since < _delay(group)
            ]
            targets = list(group.targets.values()) + draining
    return _original_describe(self, target_group_arn, targets)


models.ELBv2Backend.describe_target_health = describe_target_health
models.FakeTargetGroup.register = register
models.FakeTargetGroup.deregister = deregister
models.FakeTargetGroup.health_for = health_for

if __name__ == "__main__":
    sys.exit(main())
