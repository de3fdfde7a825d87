"""Results where teams already look: MLflow, TensorBoard and Weights & Biases (optional extras,
``pip install 'tuneoff[tracking]'``).

``train.report_to: [mlflow, tensorboard, wandb]`` sends a run's resolved config (as parameters), every evaluation's
validation metrics at their optimizer step, the final test metrics and resources, and the saved model (MLflow
artifact). A study is one MLflow experiment (``train.experiment``, set to the study's name) with a run per tuneoff
run, and its report is logged as a run of its own. MLflow's store defaults to SQLite next to the run
(``sqlite:///<output_dir>/mlflow.db``; a study's is ``<results>/<study>/runs/mlflow.db``), or ``train.tracking_uri``;
artifacts beside it in ``mlartifacts/``.
TensorBoard event files go to ``<output_dir>/tensorboard/<run id>``.
W&B follows its own settings (``WANDB_MODE``, ``WANDB_PROJECT``, ``WANDB_ENTITY``, ``wandb login``): the project is
``WANDB_PROJECT`` or ``train.experiment`` (a study's name) or ``tuneoff``, a study's runs one group, and its local files
go to ``<output_dir>/wandb`` (``WANDB_MODE=offline`` writes only those; ``wandb sync`` uploads them later). As in
transformers' own W&B callback, the model is uploaded as an artifact only when ``WANDB_LOG_MODEL`` asks (``end``).
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from tuneoff.core.errors import TuneoffError

log = logging.getLogger(__name__)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _numbers(tree: dict, prefix: str = "") -> dict[str, float]:
    return {
        k: float(v) for k, v in _flat(tree, prefix).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def mlflow_uri(tracking_uri: str | None, output_dir) -> str:
    return tracking_uri or f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


def use_experiment(mlflow, uri: str, name: str) -> None:
    """Point MLflow at ``uri`` and experiment ``name``. A new experiment in a local SQLite store keeps its artifacts
    beside the database (``mlartifacts/``): MLflow's default would be ``./mlruns`` in whatever directory the user
    happens to be in."""
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(name) is None:
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
        try:
            mlflow.create_experiment(name, artifact_location=location)
        except mlflow.exceptions.MlflowException:
            pass  # another process of the study created it first
    mlflow.set_experiment(name)


def check(cfg) -> None:
    """Before anything trains: every tracking destination of ``train.report_to`` can be reached and written. A refused
    connection, an unwritable SQLite directory or W&B online without a key is an error now (exit 2), not four minutes
    of MLflow's retries and a lost run; a destination that fails later, mid-run, only warns (see ``Trackers``)."""
    if "wandb" in cfg.train.report_to:
        check_wandb()
    if "mlflow" in cfg.train.report_to:
        uri = mlflow_uri(cfg.train.tracking_uri, cfg.output_dir)
        parsed = urlparse(uri)
        if parsed.scheme in ("http", "https"):
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            try:
                socket.create_connection((parsed.hostname, port), timeout=3).close()
            except OSError as exc:
                raise TuneoffError(
                    f"train.tracking_uri={uri}: the MLflow server does not answer ({exc.strerror or exc}). "
                    "Start it, fix the URI, or drop mlflow from train.report_to; nothing was trained."
                ) from None
        elif parsed.scheme.startswith("sqlite") or parsed.scheme in ("", "file"):
            target = Path(uri.split("///", 1)[1] if "///" in uri else parsed.path)
            directory = target.parent if parsed.scheme.startswith("sqlite") else target
            existing = next((d for d in [directory, *directory.parents] if d.exists()), directory)
            if not existing.is_dir():
                raise TuneoffError(
                    f"train.tracking_uri={uri}: {existing} is not a directory, so MLflow cannot keep its "
                    "store under it. Choose a writable place (train.tracking_uri) or drop mlflow from "
                    "train.report_to; nothing was trained."
                )
            if not os.access(existing, os.W_OK):
                raise TuneoffError(
                    f"train.tracking_uri={uri}: {existing} is not writable, so MLflow cannot keep its store "
                    "there. Choose a writable place (train.tracking_uri) or drop mlflow from "
                    "train.report_to; nothing was trained."
                )


def _wandb_offline() -> bool:
    return os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled") or os.environ.get(
        "WANDB_DISABLED", ""
    ).lower() in ("1", "true", "yes")


def _wandb_logged_in() -> bool:
    """A key W&B would find: ``WANDB_API_KEY``, or the netrc entry ``wandb login`` writes for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_wandb() -> None:
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise TuneoffError(
            "train.report_to has wandb, which is not installed: pip install 'tuneoff[tracking]'."
        ) from None
    if not _wandb_offline() and not _wandb_logged_in():
        raise TuneoffError(
            "train.report_to has wandb, but W&B has no API key here: run `wandb login` (or set "
            "WANDB_API_KEY), or set WANDB_MODE=offline to write the run locally under "
            "<output_dir>/wandb and upload it later with `wandb sync`; nothing was trained."
        )


class MLflow:
    def __init__(self, cfg, run_id: str):
        try:
            import mlflow
        except ImportError:
            raise TuneoffError(
                "train.report_to has mlflow, which is not installed: pip install 'tuneoff[tracking]'."
            ) from None
        self.mlflow = mlflow
        use_experiment(mlflow, mlflow_uri(cfg.train.tracking_uri, cfg.output_dir), cfg.train.experiment or "tuneoff")
        self.run = mlflow.start_run(run_name=run_id)
        params = {k: str(v)[:500] for k, v in _flat(cfg.model_dump(mode="json")).items()}
        mlflow.log_params(params)

    def evaluation(self, step: int, validation: dict) -> None:
        self.mlflow.log_metrics(
            {
                f"validation.{k}": v
                for k, v in validation.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            },
            step=step,
        )

    def finish(self, metrics: dict, resources: dict, model_dir: Path) -> None:
        self.mlflow.log_metrics({**_numbers(metrics.get("test", {}), "test."), **_numbers(resources, "resources.")})
        self.mlflow.log_artifacts(str(model_dir), artifact_path="model")
        self.mlflow.end_run()

    def abort(self) -> None:
        self.mlflow.end_run(status="FAILED")


class TensorBoard:
    def __init__(self, cfg, run_id: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TuneoffError(
                "train.report_to has tensorboard, which is not installed: pip install 'tuneoff[tracking]'."
            ) from None
        self.writer = SummaryWriter(log_dir=str(Path(cfg.output_dir) / "tensorboard" / run_id))
        self.writer.add_text("config", "```\n" + cfg.to_yaml() + "\n```")

    def evaluation(self, step: int, validation: dict) -> None:
        for key, value in validation.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"validation/{key}", value, step)

    def finish(self, metrics: dict, resources: dict, model_dir: Path) -> None:
        for key, value in {**_numbers(metrics.get("test", {}), "test/"), **_numbers(resources, "resources/")}.items():
            self.writer.add_scalar(key, value, 0)
        self.writer.close()

    def abort(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, cfg, run_id: str):
        try:
            import wandb
        except ImportError:
            raise TuneoffError(
                "train.report_to has wandb, which is not installed: pip install 'tuneoff[tracking]'."
            ) from None
        self.wandb = wandb
        directory = Path(cfg.output_dir).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        # reinit="create_new": a notebook or a study's worker trains several runs in one process, each its own W&B run
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or cfg.train.experiment or "tuneoff",
            name=run_id,
            group=cfg.train.experiment,
            job_type="train",
            dir=str(directory),
            config=cfg.model_dump(mode="json"),
            reinit="create_new",
        )

    def evaluation(self, step: int, validation: dict) -> None:
        self.run.log(
            {
                f"validation/{k}": v
                for k, v in validation.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            },
            step=step,
        )

    def finish(self, metrics: dict, resources: dict, model_dir: Path) -> None:
        self.run.summary.update({**_numbers(metrics.get("test", {}), "test/"), **_numbers(resources, "resources/")})
        if os.environ.get("WANDB_LOG_MODEL", "").lower() in ("end", "true", "1", "checkpoint"):
            artifact = self.wandb.Artifact(f"model-{self.run.id}", type="model")
            artifact.add_dir(str(model_dir))
            self.run.log_artifact(artifact)
        self.run.finish()

    def abort(self) -> None:
        self.run.finish(exit_code=1)


class Trackers:
    """The run's trackers, called at every evaluation and at the end; nothing when ``report_to`` is empty. A tracker
    that fails mid-run (its server went away, its disk filled) is dropped with a warning: the run goes on and is
    published; only the tracking record is incomplete."""

    def __init__(self, cfg, run_id: str, main: bool):
        kinds = {"mlflow": MLflow, "tensorboard": TensorBoard, "wandb": WandB}
        self.all = [kinds[k](cfg, run_id) for k in (cfg.train.report_to if main else [])]

    def _each(self, call) -> None:
        for tracker in list(self.all):
            try:
                call(tracker)
            except Exception as exc:  # noqa: BLE001 - the trackers' many error types; the run matters more
                log.warning(
                    "%s stopped working (%s: %s); the run goes on without it",
                    type(tracker).__name__,
                    type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "",
                )
                self.all.remove(tracker)

    def evaluation(self, step: int, validation: dict) -> None:
        self._each(lambda t: t.evaluation(step, validation))

    def finish(self, metrics: dict, resources: dict, model_dir: Path) -> None:
        self._each(lambda t: t.finish(metrics, resources, model_dir))
        self.all = []

    def abort(self) -> None:
        for t in self.all:
            t.abort()
        self.all = []


def log_study_report(spec, runs_dir: Path, report_dir: Path) -> None:
    """A study's report as a run of its own in the study's experiment, when its runs report to MLflow."""
    train = spec.base.get("train") or {}
    if "mlflow" not in (train.get("report_to") or []):
        return
    import mlflow

    use_experiment(mlflow, mlflow_uri(train.get("tracking_uri"), runs_dir), spec.name)
    with mlflow.start_run(run_name=f"{spec.name} report"):
        mlflow.log_artifacts(str(report_dir), artifact_path="report")
