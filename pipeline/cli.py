"""The training command line: LightningCLI wired for this pipeline.

* data -> model links: feature size, class names and the extractor record come from the data module;
* before ``fit`` / ``validate`` / ``test``: fetch what is missing and fill the feature cache through
  ``Trainer.predict`` on the run's own devices and strategy;
* ``test`` / ``validate`` with ``--ckpt_path``: the extractor settings come from the checkpoint, so the
  features always match what the model was trained on;
* after ``fit``: test the best checkpoint and say where the run lives and how it did.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import warnings
from pathlib import Path

import torch
from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from pipeline.data.datamodule import ActionDataModule
from pipeline.data.extract import StderrProgressBar
from pipeline.data.features import ExtractorConfig
from pipeline.data.videoset import DatasetDefinition
from pipeline.model.checkpoint import CheckpointError, check_extractor, read_checkpoint
from pipeline.model.classifier import ActionClassifier
from pipeline.model.evaluate import ReportWriter
from pipeline.options import OptionError

LINKS = (("data.feature_dim", "model.input_dim"), ("data.class_names", "model.class_names"), ("data.extractor_info", "model.extractor"))
LINKED_HPARAMS = ("input_dim", "class_names", "extractor", "_instantiator", "_class_path")


def reserve_version(root: Path) -> int:
    """The next free ``version_N`` under ``root``, created here: a logger only names its folder when it first
    writes, minutes later, so two runs started together (cross-validation in parallel) would take the same one."""
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(d.name.split("_")[1]) for d in root.glob("version_*") if d.name.split("_")[1].isdigit()]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (root / f"version_{version}").mkdir()
            return version
        except FileExistsError:
            version += 1


class OneLineParser(LightningArgumentParser):
    """A wrong option is one ``error:`` line that names it and the value given, not a page of usage."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:  # jsonargparse tries alternatives this way: keep its behaviour
            return super().error(message, ex)
        lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
        given = next((ln for ln in lines if ln.startswith("Given value:")), "")
        text = (lines[0] if lines else "invalid arguments").rstrip(":")
        if given:
            text += f": invalid value '{given.split(':', 1)[1].strip()}'"
        sys.stderr.write(f"error: {text} (see {self.prog.split(' [')[0]} --help)\n")
        self.exit(2)


class ActionCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit, validate, test; labelling videos is ``infer.py``'s work, so no ``predict`` here."""
        return {k: v for k, v in LightningCLI.subcommands().items() if k != "predict"}

    def instantiate_trainer(self, **kwargs):
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError) as e:  # e.g. --trainer.accelerator banana
            raise OptionError(f"trainer settings: {(str(e).strip().splitlines() or [type(e).__name__])[0]}") from None
        for i, cb in enumerate(trainer.callbacks):  # Lightning's default bar writes to stdout: results only there
            if type(cb) is TQDMProgressBar:
                trainer.callbacks[i] = StderrProgressBar()
        if not trainer.loggers:  # --trainer.logger false: the config's learning-rate monitor would fail the run at its start
            trainer.callbacks = [cb for cb in trainer.callbacks if not isinstance(cb, LearningRateMonitor)]
        return trainer

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for source, target in LINKS:
            parser.link_arguments(source, target, apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        """Build the model the checkpoint holds. To evaluate, extract features exactly as it was trained;
        to resume a fit, keep the configured extractor (checked against the checkpoint once built)."""
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if not ckpt_path or (sub == "fit" and ckpt_path in ("last", "hpc")):
            return
        hp = read_checkpoint(ckpt_path)["hyper_parameters"]
        update: dict = {"model": {k: v for k, v in hp.items() if k not in LINKED_HPARAMS}}
        if sub != "fit":
            update["data"] = {"extractor": {k: v for k, v in hp["extractor"].items() if k in ExtractorConfig.__dataclass_fields__}}
        self.config = self.parser.parse_object({sub: update}, self.config)
        self._checkpoint_hparams = hp

    def before_instantiate_classes(self) -> None:
        # runs are named after their data: a logger whose name is "auto" logs to runs/<dataset name>/
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.trainer.logger in (False, None) and cfg.trainer.default_root_dir is None:  # no logger: the run still goes under runs/
            cfg.trainer.default_root_dir = str(Path("runs") / DatasetDefinition.load(cfg.data.dataset).name)
        loggers = cfg.trainer.logger if isinstance(cfg.trainer.logger, list) else [cfg.trainer.logger]
        for lg in loggers:
            args = getattr(lg, "init_args", None)
            if args is not None and getattr(args, "name", None) == "auto":
                args.name = DatasetDefinition.load(cfg.data.dataset).name

    def after_instantiate_classes(self) -> None:
        # TensorBoard and CSV loggers in one folder would each pick the next free version: share one, reserved
        # now, so that a run is one folder and two runs started together never share it
        loggers = [lg for lg in self.trainer.loggers if hasattr(lg, "_version")]
        if loggers and loggers[0]._version is None and rank_zero_only.rank == 0:
            loggers[0]._version = reserve_version(Path(loggers[0].root_dir))
        for lg in loggers[1:]:
            if lg._version is None:
                lg._version = loggers[0].version
        hp = getattr(self, "_checkpoint_hparams", None)
        if hp is None:
            return
        dm = self.datamodule
        check_extractor(hp["extractor"], dm.extractor.identity, dm.feature_dim)
        if list(hp["class_names"]) != list(dm.class_names):
            raise CheckpointError(f"the checkpoint's classes {hp['class_names']} differ from the dataset's {dm.class_names}")

    def _trainer_kwargs(self) -> dict:
        t = self.config[self.subcommand].trainer
        strategy = t.strategy if isinstance(t.strategy, str) else "auto"
        return {"accelerator": t.accelerator, "devices": t.devices, "strategy": strategy, "num_nodes": t.num_nodes}

    def before_fit(self) -> None:
        self.datamodule.prepare_features("fit", self._trainer_kwargs())

    def before_validate(self) -> None:
        self.datamodule.prepare_features("validate", self._trainer_kwargs())

    def before_test(self) -> None:
        self.datamodule.prepare_features("test", self._trainer_kwargs())
        self.config_init["test"]["verbose"] = False  # the summary printed after it gives the figures once

    def after_fit(self) -> None:
        trainer = self.trainer
        if trainer.interrupted or trainer.checkpoint_callback is None:
            return
        best = trainer.checkpoint_callback.best_model_path or None
        if self.datamodule.splits.get("test"):
            trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)
        self._summary(best)  # no test split (--data.test_fraction 0, the teaching app): the model is still usable

    def after_test(self) -> None:
        self._summary(self.config_init[self.subcommand].get("ckpt_path"))

    def _summary(self, ckpt: str | None) -> None:
        m = self.trainer.callback_metrics
        report = next((c.last_report for c in self.trainer.callbacks if isinstance(c, ReportWriter)), None)
        lines = [
            f"run:          {self.trainer.log_dir}",
            f"checkpoint:   {ckpt}",
            f"stream:       {self.model.stream}"
            + (f" (chosen on the validation split from {', '.join(self.model.streams)})" if len(self.model.streams) > 1 else "")
            + (f"; frame probe's share {self.model.model.share:g} (L2 {l2:g})" if (l2 := float(self.model.model.probe_l2)) else ""),
            "test:         "
            + (", ".join(f"{k.split('/')[1]} {float(m[k]):.4f}" for k in sorted(m) if k.startswith("test/") and not k.endswith("loss"))
               or "none (no test split)"),
            f"report:       {report or 'none (written by the test)'}",
        ]
        rejection = json.loads(report.read_text()).get("rejection", {}) if report and report.is_file() else {}
        if rules := unknown_rules(rejection):
            lines.insert(-1, (
                f"unknown:      {rules}"
                + (f"; test videos called unknown {rejection['test_videos_unknown']:.0%}, video_top1 with it "
                   f"{rejection['test_video_top1_with_rejection']:.4f}" if "test_videos_unknown" in rejection else "")
            ))  # fmt: skip
        if self.trainer.is_global_zero:
            print("\n".join(lines), flush=True)  # the result: stdout, while logs and progress go to stderr


def unknown_rules(rejection: dict) -> str:
    """The report's rejection rules in words (empty when there are none), e.g. "motion and GRU state unlike
    training (past the limits: 5% of known clips, 10% of validation frames; weighed 0.9 : 0.1)"."""
    parts = [(name, f"{rejection[key]['quantile']:.0%} of {what}") for key, name, what in (
        ("motion", "motion", "known clips"), ("prototypes", "GRU state", "validation frames")) if rejection.get(key)]  # fmt: skip
    limits = "the limits" if len(parts) > 1 else "the limit"
    weight = rejection.get("prototypes", {}).get("weight") if len(parts) > 1 else None  # the GRU state's share
    shares = f"; weighed {1 - weight:g} : {weight:g}" if weight is not None else ""
    rules = [f"{' and '.join(n for n, _ in parts)} unlike training (past {limits}: {', '.join(w for _, w in parts)}{shares})"] if parts else []
    if rejection.get("threshold"):
        rules.append(f"top probability below {rejection['threshold']:.3f} ({rejection['quantile']:.0%} of validation frames are)")
    return " or ".join(rules)


def quiet_third_party() -> None:
    """Keep the console for what matters: drop advertising and warnings that are not the user's to fix."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")  # one predict step = one video
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")  # features are in memory
    # the CSV and TensorBoard loggers share one version folder on purpose; the CSV writer replaces its own files only
    warnings.filterwarnings("ignore", message=".*Previous log files in this directory will be deleted.*")
    warnings.filterwarnings("ignore", message=".*The dirpath has changed from.*")  # testing an old checkpoint: nothing to reload


def main(args: list[str] | None = None) -> ActionCLI:
    quiet_third_party()
    signal.signal(signal.SIGTERM, _terminated)  # Lightning adds its own while a trainer runs, and calls this one too
    try:
        cli = _cli(args)
    except SIGTERMException:  # Lightning's own SystemExit, with status 0: a scheduler would read success
        print("error: stopped by SIGTERM before the run finished; its checkpoints so far are kept "
              "(resume with the same command and --ckpt_path last)", file=sys.stderr)  # fmt: skip
        sys.exit(143)
    leave_process_group()
    return cli


def leave_process_group() -> None:
    """Destroy the DDP process group of a run that ended well, on every rank.

    Lightning destroys NCCL's group at exit but not Gloo's (DDP on CPUs), whose worker threads then die with
    the interpreter and can abort it (SIGABRT, "terminate called without an active exception") after the
    work is done. Not on a failure: destroying a group while another rank waits in a collective can hang."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _terminated(*_) -> None:
    raise SIGTERMException  # wherever the run is (extraction, between stages, an epoch): stop, say so below


def _cli(args: list[str] | None) -> ActionCLI:
    return ActionCLI(
        ActionClassifier,
        ActionDataModule,
        parser_class=OneLineParser,
        trainer_defaults={"callbacks": [ReportWriter()]},
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":  # ``python -m pipeline.cli``: train.py without the repository (the teaching app runs this)
    from pipeline.errors import run_cli

    run_cli(main)
