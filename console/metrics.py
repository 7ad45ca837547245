"""`gpuserve metrics`: the rollouts' state as Prometheus metrics, read live at each scrape.

Like kube-state-metrics: nothing is pushed or cached; each scrape reads the stack's
services from the live cluster (runtime/live.py) and the splitter's samples, and
reports them as gauges:

    gpuserve_rollout_phase{service,phase}            1 for the phase the service is in
    gpuserve_rollout_wave{service}                   the wave under way (0: none)
    gpuserve_traffic_percent{service,version,role}   the router's weights
    gpuserve_replicas{service,version,state}         ready and declared replicas
    gpuserve_gpus_in_use{service}                    GPUs its replicas hold
    gpuserve_window_requests{service,version}        real traffic of the last window,
    gpuserve_window_error_ratio{service,version}       as the gates count it
    gpuserve_window_p95_seconds{service,version}
    gpuserve_last_gate_passed{service,gate}          the last gate verdict on record
    gpuserve_rollouts{service,outcome}               rollouts in the history, by outcome
    gpuserve_operator_command{service,command,version}  1 while an operator's command stands
    gpuserve_scrape_error{service}                   1 when the service's cluster did not answer
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from console.source import ConsoleError, Rollout, Source
from console.status import status
from runtime import analysis
from runtime.record import merged

PHASES = ("absent", "steady", "rolling out", "rolling back", "held")


def phase_name(phase: str) -> str:
    """The phase's kind, from status's sentence (console/status.phase)."""
    return next((p for p in PHASES if phase.startswith(p)), "steady")


class RolloutCollector(Collector):
    def __init__(self, source: Source, rollouts: list[Rollout], window_s: float = 10.0):
        self.source, self.rollouts, self.window_s = source, rollouts, window_s

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = {
            "phase": GaugeMetricFamily("gpuserve_rollout_phase", "1 for the phase the service is in",
                                       labels=["service", "phase"]),
            "wave": GaugeMetricFamily("gpuserve_rollout_wave", "The wave under way (0: none)", labels=["service"]),
            "traffic": GaugeMetricFamily("gpuserve_traffic_percent", "The router's weight per version",
                                         labels=["service", "version", "role"]),
            "replicas": GaugeMetricFamily("gpuserve_replicas", "Replicas per version, ready and declared",
                                          labels=["service", "version", "state"]),
            "gpus": GaugeMetricFamily("gpuserve_gpus_in_use", "GPUs the service's replicas hold", labels=["service"]),
            "requests": GaugeMetricFamily("gpuserve_window_requests", "Requests in the last window, per version",
                                          labels=["service", "version"]),
            "errors": GaugeMetricFamily("gpuserve_window_error_ratio", "Errors over requests in the last window",
                                        labels=["service", "version"]),
            "p95": GaugeMetricFamily("gpuserve_window_p95_seconds", "p95 latency of the last window",
                                     labels=["service", "version"]),
            "gate": GaugeMetricFamily("gpuserve_last_gate_passed", "The last gate verdict on record (1 pass)",
                                      labels=["service", "gate"]),
            "rollouts": GaugeMetricFamily("gpuserve_rollouts", "Rollouts in the history, by outcome",
                                          labels=["service", "outcome"]),
            "operator": GaugeMetricFamily("gpuserve_operator_command", "1 while an operator's command stands",
                                          labels=["service", "command", "version"]),
            "error": GaugeMetricFamily("gpuserve_scrape_error", "1 when the service's cluster did not answer",
                                       labels=["service"]),
        }
        since_ms = int((time.time() - self.window_s) * 1000)
        for rollout in self.rollouts:
            name = rollout.service
            try:
                live, gpus = self.source.live(rollout)
                samples = self.source.samples(rollout, since_ms)
            except ConsoleError:
                g["error"].add_metric([name], 1)
                continue
            g["error"].add_metric([name], 0)
            now = status(name, live, rollout.spec, rollout.history, gpus)
            current = phase_name(now.phase)
            for p in PHASES:
                g["phase"].add_metric([name, p], 1 if p == current else 0)
            g["wave"].add_metric([name], float((live.intent or {}).get("wave") or 0))
            for v in now.versions:
                g["traffic"].add_metric([name, v.version, v.role], v.weight)
                g["replicas"].add_metric([name, v.version, "ready"], v.ready)
                g["replicas"].add_metric([name, v.version, "declared"], v.declared)
                figures = analysis.figures(samples, v.version)
                g["requests"].add_metric([name, v.version], figures.requests)
                g["errors"].add_metric([name, v.version], figures.error_rate)
                if figures.latencies_ms:
                    g["p95"].add_metric([name, v.version], figures.p95_ms / 1000)
            if gpus is not None:
                g["gpus"].add_metric([name], gpus)
            if now.verdicts:
                last = now.verdicts[-1].get("figures") or {}
                g["gate"].add_metric([name, str(last.get("gate"))], 1 if last.get("passed") else 0)
            for outcome, count in Counter(r.get("outcome") for r in merged(rollout.rollouts, live.rollouts)).items():
                g["rollouts"].add_metric([name, str(outcome)], count)
            if live.operator is not None:
                g["operator"].add_metric([name, live.operator.command, live.operator.version], 1)
        yield from g.values()
