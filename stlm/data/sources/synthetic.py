"""Embedded default data set: a seeded synthetic road network with real spatiotemporal structure.

Lets a fresh machine train with no download, and is hard enough that a model must use both history and
neighbours to beat last-value and historical-average forecasts:

* **Graph**: sensors at random positions in a unit-square city, each linked to its nearest neighbours
  (a sparse, connected road graph; edge weights from a Gaussian kernel of distance, as DCRNN builds them).
* **Recurring demand**: morning and evening rush hours whose strength grows towards a few business districts,
  with a per-sensor timing offset, lighter weekends, and a random demand factor per day (weather, events),
  so the time-of-week average is right on average and wrong on any given day.
* **Congestion dynamics**: a congestion level ``c`` in [0, 1] per sensor that relaxes towards the demand and
  spills over to neighbouring sensors along the graph with a delay of a few steps (queues grow upstream).
* **Incidents**: random bottlenecks that hold one sensor congested for 20-120 minutes; through the spill-over,
  neighbours slow down minutes later. History and neighbours predict them, the calendar cannot.
* **Measurement**: speed = free-flow speed x (1 - 0.7 c^1.2) + noise (mph); sensor outages of 1-8 hours and
  isolated dropped readings are stored as missing (mask False, value 0, as in METR-LA).

Shapes: values [T, N, 1] (speed, mph), T = n_days * 24 * 60 / interval_minutes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stlm.data.sources.base import InMemorySource, SpatioTemporalSeries


class SyntheticTrafficSource(InMemorySource):
    """Seeded synthetic traffic speeds on a generated road graph (the ``dataset=traffic`` default)."""

    def __init__(
        self,
        n_nodes: int = 200,
        n_days: int = 28,
        interval_minutes: int = 5,
        seed: int = 0,
        start: str = "2024-01-01 00:00",
        neighbours: int = 4,
        incidents_per_day: float = 16.0,
        spill: float = 0.9,
        spill_delay_minutes: float = 10.0,
        outage_fraction: float = 0.02,
        dropout_fraction: float = 0.005,
        name: str = "traffic",
    ):
        if n_nodes < 2 or n_days < 1 or interval_minutes < 1:
            raise ValueError(
                f"SyntheticTrafficSource: need n_nodes >= 2, n_days >= 1, interval_minutes >= 1; "
                f"got n_nodes={n_nodes}, n_days={n_days}, interval_minutes={interval_minutes}"
            )
        if (24 * 60) % interval_minutes:
            raise ValueError(f"SyntheticTrafficSource: interval_minutes={interval_minutes} must divide a day (1440 minutes)")
        self.n_nodes, self.n_days, self.interval_minutes = n_nodes, n_days, interval_minutes
        self.seed, self.start, self.neighbours = seed, start, neighbours
        self.incidents_per_day = incidents_per_day
        self.spill, self.spill_delay_minutes = spill, spill_delay_minutes
        self.outage_fraction, self.dropout_fraction = outage_fraction, dropout_fraction
        self.name = name

    # ---------------------------------------------------------------- graph
    def _graph(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Positions [N, 2] in the unit square and a symmetric Gaussian-kernel adjacency [N, N]."""
        pos = rng.random((self.n_nodes, 2))
        dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        k = min(self.neighbours, self.n_nodes - 1)
        nearest = np.argsort(dist, axis=1)[:, 1 : k + 1]
        linked = np.zeros_like(dist, dtype=bool)
        linked[np.repeat(np.arange(self.n_nodes), k), nearest.ravel()] = True
        linked |= linked.T
        sigma = dist[linked].std() + 1e-9
        adj = np.where(linked, np.exp(-((dist / sigma) ** 2)), 0.0)
        np.fill_diagonal(adj, 1.0)
        return pos, adj.astype(np.float32)

    def _directions(self, rng: np.random.Generator, adj: np.ndarray) -> np.ndarray:
        """Directed link weights [N, N]: entry (i, j) > 0 when traffic flows from i into j (j is downstream).

        Most road links carry both directions; a third are one-way, like ramps and one-way streets.
        """
        links = np.triu(adj, k=1) > 0
        i, j = np.nonzero(links)
        keep_ij = rng.random(len(i)) < 2 / 3
        keep_ji = ~keep_ij | (rng.random(len(i)) < 0.5)
        downstream = np.zeros_like(adj)
        downstream[i[keep_ij], j[keep_ij]] = adj[i[keep_ij], j[keep_ij]]
        downstream[j[keep_ji], i[keep_ji]] = adj[j[keep_ji], i[keep_ji]]
        return downstream

    # ---------------------------------------------------------------- demand
    def _demand(self, rng: np.random.Generator, pos: np.ndarray, times: pd.DatetimeIndex) -> np.ndarray:
        """Recurring congestion pressure [T, N] in [0, 1]: rush hours x district proximity x daily factor."""
        N = self.n_nodes
        districts = rng.random((3, 2))
        closeness = np.exp(-np.min(np.linalg.norm(pos[:, None] - districts[None], axis=-1), axis=1) ** 2 / 0.08)
        strength = 0.25 + 0.75 * closeness  # [N]
        offset_h = rng.normal(0.0, 0.4, N)  # per-sensor shift of the rush hour (hours)
        # Inbound sensors peak in the morning, outbound in the evening.
        inbound = rng.random(N)
        hour = np.asarray(times.hour + times.minute / 60.0)[:, None] - offset_h[None]
        morning = np.exp(-0.5 * ((hour - 8.0) / 0.9) ** 2) * (0.5 + inbound)
        evening = np.exp(-0.5 * ((hour - 17.5) / 1.1) ** 2) * (1.5 - inbound)
        midday = 0.25 * np.exp(-0.5 * ((hour - 13.0) / 2.0) ** 2)
        weekend = np.asarray(times.day_of_week >= 5)[:, None]
        profile = np.where(weekend, 0.35 * morning + 0.3 * evening + 1.5 * midday, morning + evening + midday)
        day_index = np.asarray((times - times[0]) // pd.Timedelta(days=1))
        daily = rng.lognormal(0.0, 0.25, size=(day_index.max() + 1, 1))[day_index]  # [T, 1]
        daily_local = rng.lognormal(0.0, 0.15, size=(day_index.max() + 1, N))[day_index]
        return np.clip(0.75 * strength[None] * profile * daily * daily_local, 0.0, 1.2)

    # ---------------------------------------------------------------- incidents
    def _incidents(self, rng: np.random.Generator, T: int, steps_per_hour: float) -> np.ndarray:
        """Bottleneck pressure [T, N]: each incident holds one sensor near-jammed for 20-120 minutes."""
        pressure = np.zeros((T, self.n_nodes))
        n_incidents = rng.poisson(self.incidents_per_day * self.n_days)
        starts = rng.integers(0, T, n_incidents)
        lengths = (rng.uniform(20, 120, n_incidents) / 60.0 * steps_per_hour).astype(int) + 1
        nodes = rng.integers(0, self.n_nodes, n_incidents)
        severity = rng.uniform(0.5, 1.0, n_incidents)
        for s, n_len, node, sev in zip(starts, lengths, nodes, severity):
            pressure[s : s + n_len, node] = np.maximum(pressure[s : s + n_len, node], sev)
        return pressure

    # ---------------------------------------------------------------- simulation
    def load(self) -> SpatioTemporalSeries:
        rng = np.random.default_rng(self.seed)
        steps_per_day = 24 * 60 // self.interval_minutes
        T = self.n_days * steps_per_day
        times = pd.date_range(self.start, periods=T, freq=f"{self.interval_minutes}min")
        pos, adj = self._graph(rng)
        demand = self._demand(rng, pos, times)
        incidents = self._incidents(rng, T, steps_per_day / 24.0)

        # Queues spill back upstream: a sensor is pushed towards the congestion of its most congested
        # downstream neighbour (weighted by link strength) as it was ``delay`` steps ago.
        downstream = self._directions(rng, adj)
        relax = 1.0 - np.exp(-self.interval_minutes / 15.0)
        delay = max(1, round(self.spill_delay_minutes / self.interval_minutes))
        rows, cols = np.nonzero(downstream)
        weight = downstream[rows, cols]
        c = np.zeros((T, self.n_nodes))
        for t in range(1, T):
            spill = np.zeros(self.n_nodes)
            np.maximum.at(spill, rows, self.spill * weight * c[max(t - delay, 0), cols])
            target = np.maximum(np.maximum(demand[t], incidents[t]), spill)
            c[t] = np.clip(c[t - 1] + relax * (target - c[t - 1]), 0.0, 1.0)

        free_flow = rng.uniform(55.0, 70.0, self.n_nodes)
        noise = rng.normal(0.0, 1.0, (T, self.n_nodes))
        ar_noise = np.zeros_like(noise)  # slowly varying sensor noise (calibration drift, platoons)
        for t in range(1, T):
            ar_noise[t] = 0.9 * ar_noise[t - 1] + 0.35 * noise[t]
        speed = free_flow[None] * (1.0 - 0.7 * c**1.2) + ar_noise + rng.normal(0.0, 0.8, (T, self.n_nodes))
        speed = np.clip(speed, 3.0, 85.0).astype(np.float32)

        mask = self._missing(rng, T, steps_per_day / 24.0)
        speed[~mask] = 0.0
        ids = [f"s{i:03d}" for i in range(self.n_nodes)]
        # Positions mapped onto a ~30 km box around a fictional city at 34N, 118W.
        coords = np.stack([34.0 + 0.27 * pos[:, 1], -118.0 + 0.33 * pos[:, 0]], axis=1)
        return SpatioTemporalSeries(
            values=speed[..., None],
            mask=mask[..., None],
            timestamps=times,
            node_ids=ids,
            channels=["speed"],
            units=["mph"],
            adjacency=adj,
            node_coords=coords,
            name=self.name,
            origin=f"synthetic traffic (seed={self.seed}, n_nodes={self.n_nodes}, n_days={self.n_days}, "
            f"interval={self.interval_minutes}min)",
        )

    def _missing(self, rng: np.random.Generator, T: int, steps_per_hour: float) -> np.ndarray:
        """Observation mask [T, N]: sensor outages of 1-8 hours plus isolated dropped readings."""
        mask = rng.random((T, self.n_nodes)) >= self.dropout_fraction
        mean_len = 4.5 * steps_per_hour
        n_outages = rng.poisson(self.outage_fraction * T * self.n_nodes / mean_len)
        for _ in range(n_outages):
            node = rng.integers(0, self.n_nodes)
            s = rng.integers(0, T)
            mask[s : s + int(rng.uniform(1, 8) * steps_per_hour), node] = False
        return mask
