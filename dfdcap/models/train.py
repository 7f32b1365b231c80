"""`dfdcap pretrain` (synthetic stacks on the fly) and `dfdcap finetune` (a dataset file).

Both use Lightning's Trainer (CPU or GPU, DDP, mixed precision, resume) with a rich progress
bar. A run folder holds: run.json (what was run), metrics.csv (Lightning's CSV log),
last.ckpt and best.ckpt (Lightning, for resuming), last.pt and best.pt (plain dfdcap
checkpoints for evaluate/predict).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import DataLoader

from dfdcap.errors import ModelError
from dfdcap.fileio import atomic_write_json
from dfdcap.models.registry import MODELS, TINY_CONFIGS, build_model

DEFAULT_LR = 1e-3


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    best_pt: Path
    last_pt: Path
    global_step: int
    epochs_done: int
    best_val_loss: float
    resumed_from: Path | None = None
    history: list[dict] = field(default_factory=list)


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*Experiment logs directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*predict_dataloader.*")
    warnings.filterwarnings("ignore", message=".*val_check_interval.*")


def model_config(name: str, config: dict | None, tiny: bool = False) -> dict:
    """The config to build `name` with: the tiny test config or defaults, updated by `config`."""
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    cfg = dict(TINY_CONFIGS[name]) if tiny else {}
    cfg.update(config or {})
    build_model(name, **cfg)  # fail early on a bad option
    return cfg


def _trainer(run_dir: Path, *, max_epochs: int | None = None, max_steps: int = -1, val_check_interval=None,
             fast_dev_run: bool = False, precision: str | None = None, progress: bool = True, plain: object = None,
             accelerator: str = "auto", devices="auto"):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

    from dfdcap.models.run_folder import AppendingCSVLogger, AtomicCheckpointIO

    _quiet_lightning()
    callbacks = [
        ModelCheckpoint(dirpath=run_dir, filename="best", monitor="val/loss", mode="min", save_top_k=1,
                        save_last=True, enable_version_counter=False),
        plain,
    ]
    if progress:
        callbacks.append(RichProgressBar(leave=True))
    kw = dict(
        default_root_dir=str(run_dir),
        logger=AppendingCSVLogger(save_dir=str(run_dir), name="", version=""),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        max_epochs=max_epochs,
        max_steps=max_steps,
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        fast_dev_run=fast_dev_run,
        accelerator=accelerator,
        devices=devices,
    )
    if precision:
        kw["precision"] = precision
    if val_check_interval is not None:
        kw["val_check_interval"] = val_check_interval
        kw["check_val_every_n_epoch"] = None
    return L.Trainer(**kw)


def _fit(trainer, module, train, val, resumed: Path | None, run_dir: Path) -> None:
    """trainer.fit; Ctrl-C (which Lightning turns into exit(1)) becomes TrainingInterrupted (exit 130)."""
    import signal

    from lightning.pytorch.trainer.states import TrainerStatus

    from dfdcap.models.run_folder import TrainingInterrupted

    handler = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(module, train, val, ckpt_path=str(resumed) if resumed else None)
    except SystemExit:
        if trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        raise TrainingInterrupted(
            f"{run_dir}: training stopped by Ctrl-C at step {trainer.global_step}; last.ckpt, metrics.csv and run.json "
            "hold the last complete epoch (run the same command again to resume)"
        ) from None
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores Ctrl-C after the first


def _history(run_dir: Path) -> list[dict]:
    from dfdcap.models.report import read_metrics_csv

    return read_metrics_csv(run_dir / "metrics.csv")


def pretrain(
    model_name: str,
    out_path: str | Path,
    *,
    steps: int = 2000,
    size: int = 128,
    batch_size: int = 4,
    frames: int = 5,
    lr: float = DEFAULT_LR,
    config: dict | None = None,
    tiny: bool = False,
    n_val: int = 16,
    n_checks: int = 5,
    seed: int = 0,
    progress: bool = True,
    precision: str | None = None,
) -> TrainResult:
    """Train `model_name` on random synthetic stacks for `steps` optimiser steps.

    Validation on a fixed-seed synthetic validation set (n_val stacks, FixedSynthetic.VAL_SEED;
    benchmarks test on TEST_SEED stacks, never seen here) n_checks times; the best
    weights go to out_path (a plain checkpoint), the run (curves, Lightning checkpoints) to
    <out_path stem>_run/ beside it.
    """
    import lightning as L

    from dfdcap.models.data import FixedSynthetic, SyntheticStacks
    from dfdcap.models.lightning_module import DFFModule, PlainCheckpoints

    if steps < 1 or size < 16 or batch_size < 1 or frames < 2:
        raise ModelError(f"pretrain: need steps >= 1, size >= 16, batch >= 1, frames >= 2 (got {steps}, {size}, {batch_size}, {frames})")
    out_path = Path(out_path)
    cfg = model_config(model_name, config, tiny)
    run_dir = out_path.parent / f"{out_path.stem}_run"
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(seed, verbose=False)
    atomic_write_json(run_dir / "run.json", {
        "kind": "pretrain", "model": model_name, "config": cfg, "steps": steps, "size": size,
        "batch_size": batch_size, "frames": frames, "lr": lr, "seed": seed, "n_val": n_val,
        "val_seed": FixedSynthetic.VAL_SEED, "checkpoint": str(out_path.resolve()),
    })
    module = DFFModule(model_name, cfg, lr=lr, frames=(max(2, frames - 1), frames))
    train = DataLoader(SyntheticStacks(size, frames, seed), batch_size=batch_size)
    val = DataLoader(FixedSynthetic(n_val, size, frames), batch_size=batch_size)
    n_checks = max(1, min(n_checks, steps))
    interval = max(1, steps // n_checks)
    plain = PlainCheckpoints(run_dir / "last.pt", out_path, {"kind": "pretrain", "size": size})
    trainer = _trainer(run_dir, max_epochs=1, max_steps=steps, val_check_interval=interval, progress=progress, plain=plain,
                       precision=precision)
    trainer.fit(module, train, val)
    if steps % interval:
        trainer.validate(module, val, verbose=False)
    return TrainResult(run_dir, out_path, run_dir / "last.pt", trainer.global_step, trainer.current_epoch,
                       plain.best, None, _history(run_dir))


def finetune(
    model_name: str,
    data: str | Path,
    run_dir: str | Path,
    *,
    init: str | Path | None = None,
    epochs: int = 20,
    batch_size: int = 2,
    crop: int = 256,
    frames: tuple[int, int] = (4, 5),
    lr: float = 1e-4,
    config: dict | None = None,
    tiny: bool = False,
    resume: bool = True,
    fast_dev_run: bool = False,
    train_split: str | None = None,
    val_split: str | None = None,
    num_workers: int = 0,
    progress: bool = True,
    precision: str | None = None,
) -> TrainResult:
    """Fine-tune on a dataset file: masked MSE (+ CoC), random crops, stacks of 4-5 frames, Adam.

    crop: square random crop side (pixels), reduced to the image size for smaller images.

    init: a plain checkpoint to start from (its model must be `model_name`; its config is
    used). resume: if run_dir/last.ckpt exists, continue that run up to `epochs` epochs.
    """
    from dfdcap.models.checkpoint import load_checkpoint
    from dfdcap.models.data import image_size, open_split, pick_split
    from dfdcap.models.lightning_module import DFFModule, PlainCheckpoints
    from dfdcap.models.run_folder import check_run_folder

    data, run_dir = Path(data), Path(run_dir)
    train_split = train_split or pick_split(data, ("train",))
    val_split = val_split or pick_split(data, ("val", "validation", "test", "train"))
    crop = min(crop, *image_size(data, train_split), *image_size(data, val_split))  # small images: whole frames
    if init is not None:
        if config:
            raise ModelError(f"finetune: model options {config} conflict with --init {init} (its config is used)")
        init_model, ckpt = load_checkpoint(init, expected_model=model_name)
        cfg = dict(ckpt["config"])
    else:
        init_model, cfg = None, model_config(model_name, config, tiny)
    resumed = check_run_folder(run_dir, model_name, data, resume and not fast_dev_run)  # before anything is written
    run_dir.mkdir(exist_ok=True)
    atomic_write_json(run_dir / "run.json", {
        "kind": "finetune", "model": model_name, "config": cfg, "data": str(data.resolve()),
        "init": str(Path(init).resolve()) if init else None, "epochs": epochs, "batch_size": batch_size,
        "crop": crop, "frames": list(frames), "lr": lr, "train_split": train_split, "val_split": val_split,
    })
    module = DFFModule(model_name, cfg, lr=lr, frames=tuple(frames))
    if init_model is not None:
        module.model.load_state_dict(init_model.state_dict())
    train_ds = open_split(data, train_split, crop, True)
    val_ds = open_split(data, val_split, crop, False)
    if len(train_ds) == 0:
        raise ModelError(f"{data}: split {train_split!r} is empty")
    train = DataLoader(train_ds, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=len(train_ds) > batch_size)
    val = DataLoader(val_ds, batch_size=batch_size, num_workers=num_workers)
    plain = PlainCheckpoints(run_dir / "last.pt", run_dir / "best.pt", {"kind": "finetune", "data": str(data)})
    trainer = _trainer(run_dir, max_epochs=epochs, fast_dev_run=fast_dev_run, progress=progress, plain=plain,
                       precision=precision)
    _fit(trainer, module, train, val, resumed, run_dir)
    return TrainResult(run_dir, run_dir / "best.pt", run_dir / "last.pt", trainer.global_step,
                       trainer.current_epoch, plain.best, resumed, _history(run_dir))
