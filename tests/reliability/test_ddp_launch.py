"""Several processes: ``torchrun --nproc_per_node=2 -m stlm.train`` on CPU (gloo) trains, logs one MLflow run, and
every rank computes the same test metrics; a Hydra multirun combined with DDP is refused with the reason.
(``trainer=ddp trainer.devices=2`` launched by Lightning itself: tests/test_train.py::test_ddp_on_cpu_trains_and_logs_one_run.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys

from mlflow.tracking import MlflowClient

from reliability_helpers import env, train_cmd
from stlm.train.config_check import check_config
from stlm.train.runs import RunRecord
from tiny_runs import CONF_DIR, TINY_TRAFFIC, compose

RANK_LINE = re.compile(r"rank (\d) of 2 test metrics: (\{.*\})")


def test_torchrun_two_cpu_processes_log_one_run_with_the_same_metrics_on_every_rank(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "outputs" / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "stlm.train",
           "trainer=ddp", "trainer.devices=2", *TINY_TRAFFIC, "~baselines", f"paths.outputs_root={tmp_path / 'outputs'}",
           f"hydra.run.dir={run_dir}"]  # one run directory for every rank (the documented launch)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env(uri), capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]

    per_rank = {int(rank): json.loads(metrics) for rank, metrics in RANK_LINE.findall(output)}
    assert sorted(per_rank) == [0, 1], output[-4000:]
    assert per_rank[0] == per_rank[1] and "mae_avg" in per_rank[0]

    record = RunRecord.load(run_dir / "run.json")
    assert record.status == "finished" and record.test_metrics == per_rank[0]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("traffic").experiment_id])
    assert [r.info.run_id for r in runs] == [record.mlflow_run_id]
    assert runs[0].data.metrics["test/mae_avg"] == per_rank[1]["mae_avg"]


def test_multirun_with_ddp_is_refused_with_the_reason(tmp_path):
    proc = subprocess.run(train_cmd("-m", "trainer=ddp", "trainer.devices=2", "seed=0,1", *TINY_TRAFFIC, "logger=none",
                                    f"paths.outputs_root={tmp_path / 'outputs'}"),
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "a Hydra multirun (-m) cannot train with several processes (trainer.devices=2" in proc.stderr
    assert "torchrun --nproc_per_node=N -m stlm.train" in proc.stderr and "Traceback" not in proc.stderr
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))  # no job trained


def test_slurm_example_is_preemptible_and_its_overrides_compose():
    """scripts/slurm_train.sbatch: SIGTERM before the limit, requeue, resume with ckpt_path=last, and a trainer
    configuration that composes and passes the check (SLURM itself is not available here)."""
    script = (CONF_DIR.parent / "scripts" / "slurm_train.sbatch").read_text()
    assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0
    for needed in ("#SBATCH --signal=TERM@", "#SBATCH --requeue", "RESUME=(ckpt_path=last)", "scontrol requeue", "srun "):
        assert needed in script, needed
    block = script.split("STLM_ARGS=(", 1)[1].split(")\n", 1)[0]
    args = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", line.strip()) for line in block.strip().splitlines()]
    cfg = compose("train", [a for a in args if not a.startswith("hydra.")] + ["paths.output_dir=/unused"])
    check_config(cfg)
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("ddp", 4, 2)
