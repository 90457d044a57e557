"""The engine without a broker: replaying recordings, analysts' scenarios, traffic.

:mod:`~streamtags.offline.replay` drives the same engine as the live worker
on a simulated clock; :mod:`~streamtags.offline.scenarios` checks "given
these events, expect these tags" (files shaped by
:mod:`~streamtags.offline.scenario_spec`); :mod:`~streamtags.offline.simulate`
generates shopper traffic and personas with a ground truth. No Faust,
Kafka client or Redis here.
"""

__all__: list[str] = []
