"""How a quantile run's band would score under other calibration rules: fitted on one split, scored on another.

    python scripts/band_calibration_study.py RUN_DIR [--leads 1 6 12 24]

RUN_DIR is a finished ``python -m stlm.train ... model.quantiles=default`` run (its ``resolved_config.yaml``,
``run.json`` and best checkpoint). The script rebuilds the run's data and model from the resolved config, loads
the best checkpoint, sets the band scale to the identity (the head's own band) and predicts the training,
validation and test windows once in eval mode. Every rule below is then a different ``[H, Q]`` band scale
(stlm.nn.band_scale.BandScale) applied to those same predictions, so the rows differ only in the calibration:

    raw head                      identity
    val, widen only (shipped)     the pinball-optimal factor per (lead, level) on validation, floored at 1
    val, two-sided                the same without the floor (engine.narrow_bands=true)
    val, one factor per lead      one CRPS-optimal factor for all levels of a lead, floored at 1
    val, paired levels            tau and 1 - tau share one factor (their ratio histograms pooled), floored at 1
    val, bias removed             ratios about median + the lead's validation median residual, floored at 1
    train split, two-sided        the per-(lead, level) fit on the training windows' eval-mode predictions
    volatility x val widen only   offsets times (trailing rms hourly change / its training mean) ** gamma_lead
                                  (gamma per lead chosen on the training windows), then the shipped fit

First a diagnosis table (the raw head per split: median RMSE, 90% width and coverage), then the rules: CRPS and
90% coverage on validation (in-sample for the val rules) and on test, per lead and averaged. Units and token
weights are those of the engine's test metrics; the shipped row reproduces the run's test metrics (printed
beside it as a check; a retrained run's band scale is the product of per-epoch refits, so tiny differences are
possible). The run's reference baselines' test CRPS per lead come from its run.json.

Figures for ERA5: docs/probabilistic.md. This is a study tool: nothing here changes a run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stlm.metrics.calibration import BandCalibration  # noqa: E402
from stlm.metrics.masked import weight_mask  # noqa: E402
from stlm.metrics.probabilistic import crps_from_quantiles, interval_indices  # noqa: E402
from stlm.nn.band_scale import BandScale  # noqa: E402
from stlm.train.job import build_engine  # noqa: E402

UNIFORM_GRID = torch.linspace(0.3, 4.0, 75)  # candidate factors for "one factor per lead"
GAMMA_GRID = torch.linspace(0.0, 1.5, 16)  # candidate volatility exponents


class Split:
    """Eval-mode predictions of one split with the head's own band: P [B, H, N, C, Q], Y and W [B, H, N, C],
    V [B, N, C] the trailing rms of the window's step-to-step changes (scaled inputs, observed pairs only)."""

    def __init__(self, engine, loader):
        P, Y, W, V = [], [], [], []
        with torch.no_grad():
            for batch, pred in engine._eval_pass(loader):
                x, m = batch["x"], batch["x_mask"]
                pairs = m[:, 1:] * m[:, :-1]
                V.append((((x[:, 1:] - x[:, :-1]) * pairs) ** 2).sum(1).div(pairs.sum(1).clamp_min(1)).sqrt())
                P.append(pred)
                Y.append(batch["y"])
                W.append(weight_mask(batch["mask"], engine.loss_weights))
        self.P, self.Y, self.W, self.V = (torch.cat(t) for t in (P, Y, W, V))


class Study:
    """The rules' arithmetic on predictions made with the head's own band (levels [Q], horizon H)."""

    def __init__(self, horizon: int, levels: torch.Tensor):
        self.levels = torch.as_tensor(levels, dtype=torch.float64)
        self.band = BandScale(horizon, self.levels).eval()  # applies a rule's [H, Q] factors as the model does
        self.median = self.band.median
        self.interval = interval_indices(self.levels, 0.9)

    def per_lead(self, x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        return (x * W).sum((0, 2, 3)) / W.sum((0, 2, 3))

    def score(self, P, Y, W) -> tuple[torch.Tensor, torch.Tensor]:
        """CRPS and 90% coverage per lead, as the engine's test metrics compute them."""
        lo, hi = self.interval
        inside = ((Y >= P[..., lo]) & (Y <= P[..., hi])).to(P)
        return self.per_lead(crps_from_quantiles(P, Y, self.levels), W), self.per_lead(inside, W)

    def scaled(self, P: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        self.band.scale.copy_(scale)
        return self.band(P)

    def fit(self, P, Y, W) -> torch.Tensor:
        calibration = BandCalibration(P.shape[1], self.levels)
        calibration.update(P, Y, W)
        return calibration.compute()

    def fit_paired(self, P, Y, W) -> torch.Tensor:
        calibration = BandCalibration(P.shape[1], self.levels)
        calibration.update(P, Y, W)
        pooled = BandCalibration(P.shape[1], self.levels)
        pooled.histogram.copy_(calibration.histogram + calibration.histogram.flip(1))  # level k with Q-1-k
        return pooled.compute()

    def fit_uniform(self, P, Y, W) -> torch.Tensor:
        H, Q = P.shape[1], P.shape[-1]
        best, best_crps = torch.ones(H), torch.full((H,), float("inf"))
        for factor in UNIFORM_GRID:
            crps, _ = self.score(self.scaled(P, torch.full((H, Q), float(factor))), Y, W)
            better = crps < best_crps
            best, best_crps = torch.where(better, factor, best), torch.where(better, crps, best_crps)
        return best.view(H, 1).expand(H, Q).clone()

    def median_bias(self, P, Y, W) -> torch.Tensor:
        """The W-weighted median of ``y - median`` per lead [H]."""
        out = []
        for h in range(P.shape[1]):
            r, w = (Y[:, h] - P[:, h, ..., self.median]).flatten(), W[:, h].flatten()
            order = torch.argsort(r)
            cum = torch.cumsum(w[order], 0)
            out.append(r[order][torch.searchsorted(cum, cum[-1] / 2).clamp(max=len(r) - 1)])
        return torch.stack(out)

    def volatility(self, P, V, gamma, reference) -> torch.Tensor:
        c = P[..., self.median : self.median + 1]
        factor = (V / reference).clamp_min(1e-3)[:, None, :, :, None] ** gamma.to(P).view(1, -1, 1, 1, 1)
        return c + factor * (P - c)


def load(run_dir: Path):
    cfg = OmegaConf.load(run_dir / "resolved_config.yaml")
    if cfg.model.get("quantiles") is None:
        raise SystemExit(f"{run_dir}: model.quantiles is null; this study needs a quantile run (model.quantiles=default)")
    record = json.loads((run_dir / "run.json").read_text())
    datamodule = instantiate(cfg.dataset.datamodule)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")
    engine = build_engine(cfg.model, cfg.engine, datamodule, quantiles=cfg.model.get("quantiles"))
    state = torch.load(record["best_checkpoint"], weights_only=True, map_location="cpu")["state_dict"]
    engine.load_state_dict(state, strict=False)
    return engine, datamodule, record


def by_lead(metrics: dict[str, float], prefix: str, lead: int) -> float | None:
    """The metric ``prefix`` at ``lead`` from test-metric keys such as ``crps_lead24h`` or ``crps_h3``."""
    for key, value in metrics.items():
        rest = key.removeprefix(prefix)
        if key.startswith(prefix) and rest != "avg" and int("".join(ch for ch in rest if ch.isdigit()) or -1) == lead:
            return value
    return None


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--leads", type=int, nargs="+", default=[1, 6, 12, 24], help="1-based leads to show")
    args = parser.parse_args()
    engine, datamodule, record = load(args.run_dir)
    band = engine.band_scale
    shipped_scale = band.scale.clone()
    band.scale.fill_(1.0)  # the head's own band; each rule below is applied to these predictions
    study = Study(band.scale.shape[0], band.levels)
    train, val, test = (Split(engine, dl) for dl in (datamodule.train_dataloader(), datamodule.val_dataloader(),
                                                      datamodule.test_dataloader()))
    H, Q = test.P.shape[1], test.P.shape[-1]
    idx = [lead - 1 for lead in args.leads]
    fmt = lambda v: [f"{float(v[i]):.3f}" for i in idx] + [f"{float(v.mean()):.3f}"]
    leads = [f"@{lead}" for lead in args.leads] + [" avg"]

    rows = []
    for name, split in (("train", train), ("val", val), ("test", test)):
        med = split.P[..., study.median]
        rmse = study.per_lead((med - split.Y) ** 2, split.W).sqrt()
        width = study.per_lead(split.P[..., study.interval[1]] - split.P[..., study.interval[0]], split.W)
        _, cov = study.score(split.P, split.Y, split.W)
        rows.append([f"{name} ({split.P.shape[0]} windows)"] + fmt(rmse) + fmt(width) + fmt(cov))
    print("Raw head per split\n")
    print(table(["split"] + [f"RMSE{x}" for x in leads] + [f"width90{x}" for x in leads] + [f"cov90{x}" for x in leads], rows))

    reference = train.V.mean()
    gamma, best = torch.zeros(H), torch.full((H,), float("inf"))
    for g in GAMMA_GRID:  # chosen on the training windows: the train-fitted band's train CRPS per lead
        P = study.volatility(train.P, train.V, torch.full((H,), float(g)), reference)
        crps, _ = study.score(study.scaled(P, study.fit(P, train.Y, train.W)), train.Y, train.W)
        better = crps < best
        gamma, best = torch.where(better, g, gamma), torch.where(better, crps, best)
    vol_val, vol_test = (study.volatility(s.P, s.V, gamma, reference) for s in (val, test))
    bias = study.median_bias(val.P, val.Y, val.W)

    floor = lambda s: s.clamp_min(1.0)
    rules = {
        "raw head": (torch.ones(H, Q), val.P, test.P),
        "val, widen only (shipped)": (floor(study.fit(val.P, val.Y, val.W)), val.P, test.P),
        "val, two-sided": (study.fit(val.P, val.Y, val.W), val.P, test.P),
        "val, one factor per lead": (floor(study.fit_uniform(val.P, val.Y, val.W)), val.P, test.P),
        "val, paired levels": (floor(study.fit_paired(val.P, val.Y, val.W)), val.P, test.P),
        "val, bias removed": (floor(study.fit(val.P, val.Y - bias.view(1, H, 1, 1), val.W)), val.P, test.P),
        "train split, two-sided": (study.fit(train.P, train.Y, train.W), val.P, test.P),
        "volatility x val widen only": (floor(study.fit(vol_val, val.Y, val.W)), vol_val, vol_test),
    }
    rows = []
    for name, (scale, Pv, Pt) in rules.items():
        crps_v, cov_v = study.score(study.scaled(Pv, scale), val.Y, val.W)
        crps_t, cov_t = study.score(study.scaled(Pt, scale), test.Y, test.W)
        rows.append([name, f"{float(crps_v.mean()):.3f}", f"{float(cov_v.mean()):.3f}"] + fmt(crps_t) + fmt(cov_t))
    for name, metrics in record.get("baseline_metrics", {}).items():
        if "crps_avg" in metrics:
            cells = [by_lead(metrics, "crps_", lead) for lead in args.leads] + [metrics["crps_avg"]]
            cells += [by_lead(metrics, "coverage90_", lead) for lead in args.leads] + [metrics["coverage90_avg"]]
            rows.append([f"{name} (residual bands, run.json)", "-", "-"] + ["-" if v is None else f"{v:.3f}" for v in cells])
    print(f"\nBand rules: fitted as named, scored on validation and test (gamma per lead on train: "
          f"{[round(float(gamma[i]), 2) for i in idx]} at leads {args.leads})\n")
    print(table(["rule", "val CRPS avg", "val cov90 avg"] + [f"test CRPS{x}" for x in leads] + [f"test cov90{x}" for x in leads], rows))
    crps_ckpt, _ = study.score(study.scaled(test.P, shipped_scale), test.Y, test.W)
    print(f"\ncheck: the checkpoint's own band scale scores test CRPS avg {float(crps_ckpt.mean()):.4f}; "
          f"run.json has {record['test_metrics'].get('crps_avg', float('nan')):.4f}")


if __name__ == "__main__":
    main()
