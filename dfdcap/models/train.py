"""`dfdcap pretrain` (a pool of synthetic stacks rendered once) and `dfdcap finetune` (a dataset file).

Both use Lightning's Trainer (CPU or GPU, DDP, mixed precision, resume) with a rich progress
bar. A run folder holds: run.json (what was run), metrics.csv (Lightning's CSV log),
last.ckpt and best.ckpt (Lightning, for resuming), last.pt and best.pt (plain dfdcap
checkpoints for evaluate/predict).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import DataLoader

from dfdcap.errors import DatasetError, DfdcapError, ModelError
from dfdcap.fileio import atomic_write_json, physical_memory_bytes
from dfdcap.models.registry import MODELS, TINY_CONFIGS, build_model
from dfdcap.parse import plain_number

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
    is_global_zero: bool = True  # False in the other processes of a multi-process run (they print nothing)


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


@dataclass(frozen=True)
class Hardware:
    """Where training runs, as Lightning's Trainer takes it: accelerator (cpu | gpu | mps | auto),
    devices ("auto", a count, -1 = all, or a list of ids), num_nodes, strategy (auto | ddp | ddp_spawn |
    fsdp | ...), and DataLoader worker processes per training process. Under torchrun or SLURM
    Lightning reads the ranks from the environment; devices x num_nodes must match the launch."""

    accelerator: str = "auto"
    devices: int | str | tuple[int, ...] = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    workers: int = 0

    def distributed(self) -> bool:
        """More than one training process may run (a DDP-like strategy, several devices or nodes, or a
        launcher such as torchrun or SLURM that set WORLD_SIZE)."""
        d = self.devices
        many = (isinstance(d, tuple) and len(d) > 1) or (isinstance(d, int) and not isinstance(d, bool) and d != 1)
        return (many or self.num_nodes > 1 or str(self.strategy).startswith(("ddp", "fsdp", "deepspeed"))
                or os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1"))


def parse_devices(text: str | int) -> int | str | tuple[int, ...]:
    """--devices: "auto", a count ("2", "-1" = all) or a comma list of device ids ("0,2")."""
    t = str(text).strip()
    try:
        if "," in t:
            return tuple(plain_number(x.strip(), int) for x in t.split(",") if x.strip())
        return "auto" if t == "auto" else plain_number(t, int)
    except ValueError:
        raise ModelError(f"--devices {text!r}: expected auto, a count (2, -1 = all) or ids (0,1)") from None


def _check_lr(lr: float) -> None:
    if not (math.isfinite(lr) and 0 < lr <= 1):  # Adam's step is about lr per weight: above 1 it only diverges
        raise ModelError(f"--lr {lr}: expected a learning rate in (0, 1] (e.g. 1e-4)")


MAX_BATCH = 1024  # far above what fits a focus-stack network; 100000 got the process OOM-killed


def _check_batch_size(batch_size: int) -> None:
    if not 1 <= batch_size <= MAX_BATCH:
        raise ModelError(f"--batch-size {batch_size}: expected 1 to {MAX_BATCH} stacks per batch (e.g. 2-16)")


def _loader_kw(hw: Hardware) -> dict:
    """DataLoader options: workers that stay up between epochs (each opens its own HDF5 handle).

    In a distributed run the workers start from a fork server, not by forking the training process:
    that process already runs gloo's (or NCCL's) threads, and a worker forked while one of them held
    a lock hung at its first instruction (a 2-process DDP fine-tune on a loaded 2-core machine waited
    forever on such a worker). Pool tensors reach the workers through shared memory either way."""
    if hw.workers < 0:
        raise ModelError(f"--workers {hw.workers}: expected 0 (load in the training process) or more")
    kw: dict = {"num_workers": hw.workers, "persistent_workers": hw.workers > 0}
    if hw.workers > 0 and hw.distributed():
        kw["multiprocessing_context"] = "forkserver"
    return kw


def _trainer(run_dir: Path, *, max_epochs: int | None = None, max_steps: int = -1, val_check_interval=None,
             fast_dev_run: bool = False, precision: str | None = None, progress: bool = True, plain: object = None,
             hardware: Hardware = Hardware(), extra_callbacks: tuple = ()):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from dfdcap.models.run_folder import AppendingCSVLogger, AtomicCheckpointIO

    _quiet_lightning()
    callbacks = [
        ModelCheckpoint(dirpath=run_dir, filename="best", monitor="val/loss", mode="min", save_top_k=1,
                        save_last=True, enable_version_counter=False),
        plain,
        *extra_callbacks,
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
        accelerator=hardware.accelerator,
        devices=list(hardware.devices) if isinstance(hardware.devices, tuple) else hardware.devices,
        num_nodes=hardware.num_nodes,
        strategy=hardware.strategy,
    )
    if precision:
        kw["precision"] = precision
    if val_check_interval is not None:
        kw["val_check_interval"] = val_check_interval
        kw["check_val_every_n_epoch"] = None
    where = (f"training hardware accelerator={hardware.accelerator!r} devices={hardware.devices!r} "
             f"num_nodes={hardware.num_nodes} strategy={hardware.strategy!r}")
    try:
        trainer = L.Trainer(**kw)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{where}: {msg}") from e
    most = max(2, os.cpu_count() or 1)  # DDP on 2 processes stays possible on a 1-core machine
    if type(trainer.accelerator).__name__ == "CPUAccelerator" and trainer.num_devices > most:
        # Lightning would start one training process per CPU "device": 99 of them on 2 cores never finish
        raise ModelError(f"{where}: {trainer.num_devices} CPU training processes on {os.cpu_count()} cores; "
                         f"use --devices {most} or fewer")
    return trainer


def _kept(run_dir: Path) -> str:
    """What an interrupted finetune leaves: before the first epoch ends there is no last.ckpt."""
    if (run_dir / "last.ckpt").is_file():
        return "last.ckpt, metrics.csv and run.json hold the last complete epoch (run the same command again to resume)"
    return "no epoch was complete, so there is no last.ckpt to resume from (the same command starts over)"


def _fit(trainer, module, train, val, resumed: Path | None, run_dir: Path, kept: str | None = None) -> None:
    """trainer.fit; Ctrl-C (which Lightning turns into exit(1)) becomes TrainingInterrupted (exit 130),
    SIGTERM (which Lightning catches the same way) TrainingInterrupted with exit 143 (128 + 15).

    Python raises the KeyboardInterrupt wherever the main thread is; in a finalizer or a callback
    that swallows exceptions it is lost and training would go on. So the handler also sets a flag
    that a callback turns into `trainer.should_stop` at the next batch: either way the run stops.
    """
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.trainer.states import TrainerStatus

    from dfdcap.interrupts import CtrlCFlag
    from dfdcap.models.run_folder import TrainingInterrupted

    class _StopOnCtrlC(Callback):
        def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
            if ctrl_c.pressed:
                trainer.should_stop = True

    def message(step: int, by: str = "Ctrl-C") -> str:
        return f"{run_dir}: training stopped by {by} at step {step}; {kept if kept is not None else _kept(run_dir)}"

    ctrl_c = CtrlCFlag()
    if ctrl_c.installed:
        trainer.callbacks.append(_StopOnCtrlC())
    try:
        trainer.fit(module, train, val, ckpt_path=str(resumed) if resumed else None)
    except SystemExit:  # Lightning's exit(1) after a KeyboardInterrupt, whatever state it reached
        if not ctrl_c.pressed and trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        if trainer.received_sigterm and not ctrl_c.pressed:  # Lightning's own SIGTERM handler stopped it
            raise TrainingInterrupted(message(trainer.global_step, "SIGTERM"), exit_code=143) from None
        raise TrainingInterrupted(message(trainer.global_step)) from None
    except DfdcapError as e:  # raised in a DataLoader worker, torch re-raises it with the worker's traceback
        lines = str(e).strip().splitlines()
        if len(lines) > 1 and lines[0].startswith("Caught "):
            raise type(e)(lines[-1].split(": ", 1)[-1]) from None
        raise
    except Exception:  # cleanup that failed on the interrupted state: Lightning's rich bar makes its refresh
        if not ctrl_c.pressed:  # thread, starts the display, then the thread; a Ctrl-C in between leaves a
            raise  # thread that its stop() joins unstarted (RuntimeError)
        raise TrainingInterrupted(message(trainer.global_step)) from None
    finally:
        ctrl_c.restore()  # Lightning ignores Ctrl-C after the first
    if ctrl_c.pressed:  # the KeyboardInterrupt was lost, the flag stopped the run
        raise TrainingInterrupted(message(trainer.global_step))


def _history(run_dir: Path) -> list[dict]:
    from dfdcap.models.report import read_metrics_csv

    return read_metrics_csv(run_dir / "metrics.csv")


MAX_FRAMES = 100  # frames per synthetic stack: DFF stacks use 5-100
MAX_SIZE = 2048


def _check_pool_size(pool: int, frames: int, size: int) -> None:
    """ModelError, before a run folder is made, for a pool that could never be rendered and held:
    --frames 100000 or --pool 10^8 rendered for hours into a folder left empty, or ran out of memory."""
    if frames > MAX_FRAMES or size > MAX_SIZE:
        raise ModelError(f"pretrain: --frames {frames} / --size {size}: at most {MAX_FRAMES} frames of {MAX_SIZE} px")
    need = pool * frames * size * size * 3  # uint8 RGB, as the pool holds it
    ram = physical_memory_bytes()
    if need > ram // 2:
        raise ModelError(f"pretrain: a pool of {pool} stacks of {frames}x{size}x{size} needs {need / 1e9:.1f} GB, more than "
                         f"half of this machine's {ram / 1e9:.0f} GB; ask for fewer (--pool) or smaller stacks")


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
    hardware: Hardware = Hardware(),
    callbacks: tuple = (),
    pool: int = 512,
    crop: int | None = None,
    render_workers: int | None = None,
    init: str | Path | None = None,
) -> TrainResult:
    """Train `model_name` for `steps` optimiser steps on a pool of synthetic stacks.

    The pool: `pool` stacks of size x size and `frames` frames (4-24 px blur), rendered once by
    `render_workers` processes (kept in <run>/pool.pt for reruns with the same settings), drawn with
    augmentation as crop x crop crops (default: size) of 3..frames frames keeping both end
    frames. Validation on a fixed-seed synthetic set (n_val stacks of 5 frames,
    FixedSynthetic.VAL_SEED; benchmarks test on TEST_SEED stacks, never seen here) n_checks
    times, selected on the diopter-position L1; the best weights go to out_path (a plain
    checkpoint), the run (curves, Lightning checkpoints) to <out_path stem>_run/ beside it.
    init: a plain checkpoint (or shipped name) of the same model to continue from (its config is used; `config` may change
    options that keep the weights' shapes, e.g. fvnet's end_margin, or add layers, e.g. fvnet's reach).
    hardware: devices, nodes, strategy, loader workers; callbacks: extra Lightning callbacks. Only the
    global rank 0 writes run files (every rank renders or reads the pool).
    """
    import lightning as L

    from dfdcap.models.checkpoint import load_checkpoint
    from dfdcap.models.data import FixedSynthetic
    from dfdcap.models.lightning_module import DFFModule, PlainCheckpoints
    from dfdcap.models.pool import AugmentedPool

    _check_lr(lr)
    _check_batch_size(batch_size)
    crop = size if crop is None else crop
    if steps < 1 or size < 16 or batch_size < 1 or frames < 2 or pool < 1 or not 16 <= crop <= size:
        raise ModelError(f"pretrain: need steps >= 1, size >= 16, 16 <= crop <= size, batch >= 1, frames >= 2, pool >= 1 "
                         f"(got {steps}, {size}, {crop}, {batch_size}, {frames}, {pool})")
    if n_checks < 1 or (render_workers is not None and render_workers < 1):
        raise ModelError(f"pretrain: need --checks >= 1 and --render-workers >= 1 (got {n_checks}, {render_workers})")
    _check_pool_size(pool, frames, size)
    out_path = Path(out_path)
    init_model = None
    if init is not None:  # its config, with `config` changing options that keep the weights' shapes
        from dfdcap.models.shipped import resolve_checkpoint

        init = resolve_checkpoint(init)  # a file, or a shipped name such as fvnet
        init_model, ckpt = load_checkpoint(init, expected_model=model_name)
        cfg = {**ckpt["config"], **(config or {})}
    else:
        cfg = model_config(model_name, config, tiny)
    L.seed_everything(seed, verbose=False)
    module = DFFModule(model_name, cfg, lr=lr, frames=(min(3, frames), frames), max_steps=steps)
    if init_model is not None:  # before anything is written: a misfit leaves no run folder behind
        misfit = f"pretrain: the weights of --init {init} do not fit {model_name} with options {config}"
        try:  # layers an option adds (fvnet's reach) start from their own init; nothing may be left over
            unexpected = module.model.load_state_dict(init_model.state_dict(), strict=False).unexpected_keys
        except RuntimeError as e:
            raise ModelError(f"{misfit} ({str(e).strip().splitlines()[0][:120]})") from None
        if unexpected:
            raise ModelError(f"{misfit} (unused weights: {', '.join(unexpected[:4])})")
    run_dir = out_path.parent / f"{out_path.stem}_run"
    n_checks = max(1, min(n_checks, steps))
    interval = max(1, steps // n_checks)
    plain = PlainCheckpoints(run_dir / "last.pt", out_path, {"kind": "pretrain", "size": size, "steps": steps, "seed": seed})
    trainer = _trainer(run_dir, max_epochs=1, max_steps=steps, val_check_interval=interval, progress=progress, plain=plain,
                       precision=precision, hardware=hardware, extra_callbacks=tuple(callbacks))  # bad hardware: before any work
    run_dir.mkdir(parents=True, exist_ok=True)
    items = _pool_items(run_dir, pool, size, frames, seed, render_workers, progress)
    if trainer.is_global_zero:
        atomic_write_json(run_dir / "run.json", {
            "kind": "pretrain", "model": model_name, "config": cfg, "steps": steps, "size": size, "crop": crop,
            "batch_size": batch_size, "frames": frames, "lr": lr, "seed": seed, "pool": pool, "n_val": n_val,
            "val_seed": FixedSynthetic.VAL_SEED, "checkpoint": str(out_path.resolve()),
            "init": str(Path(init).resolve()) if init else None, "world_size": trainer.world_size,
        })
    train = DataLoader(AugmentedPool(items, crop, steps * batch_size, seed), batch_size=batch_size, **_loader_kw(hardware))
    val = DataLoader(FixedSynthetic(n_val, size, 5), batch_size=batch_size, **_loader_kw(hardware))
    _fit(trainer, module, train, val, None, run_dir,
         kept=f"{out_path} holds the best weights of the checks done so far, if any; pool.pt is reused by a rerun")
    if steps % interval:
        trainer.validate(module, val, verbose=False)
    return TrainResult(run_dir, out_path, run_dir / "last.pt", trainer.global_step, trainer.current_epoch,
                       plain.best, None, _history(run_dir), trainer.is_global_zero)


def _pool_items(run_dir: Path, n: int, size: int, frames: int, seed: int, workers: int | None, progress: bool) -> list[dict]:
    """The rendered pool: read from run_dir/pool.pt when it was made with the same settings, else rendered."""
    import torch
    from rich.progress import Progress

    from dfdcap.fileio import atomic_path
    from dfdcap.models.pool import BLUR_RANGE_PX, packed, render_pool

    key = {"n": n, "size": size, "frames": frames, "seed": seed, "blur_px": list(BLUR_RANGE_PX)}
    cache = run_dir / "pool.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
            if saved.get("key") == key:
                return packed(saved["items"])  # a cache written before pools were packed, too
        except Exception:  # a stale or damaged cache is rendered again
            pass
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("rendering synthetic stacks", total=n)
        items = render_pool(n, size, frames, seed, workers, progress=lambda done: bar.update(task, completed=done))
    with atomic_path(cache) as tmp:
        torch.save({"key": key, "items": items}, tmp)
    return items


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
    progress: bool = True,
    precision: str | None = None,
    hardware: Hardware = Hardware(),
    callbacks: tuple = (),
    seed: int = 0,
) -> TrainResult:
    """Fine-tune on a dataset file: L1 on the diopter position (+ CoC), random crops, stacks of 4-5
    frames keeping both end frames, in random order, Adam.

    crop: square random crop side (pixels), reduced to the image size for smaller images.
    seed: seeds the sample order, the crops and loader workers: a rerun with the same seed on the
    same machine and settings trains the same weights (a resumed run reseeds, so its later epochs
    draw other crops than an uninterrupted run's).

    init: a plain checkpoint to start from (its model must be `model_name`; its config is
    used). resume: if run_dir/last.ckpt exists, continue that run up to `epochs` epochs.
    hardware: devices, nodes, strategy, loader workers (every process opens the HDF5 file itself;
    under DDP each rank trains on its own share of the samples); callbacks: extra Lightning
    callbacks. Only the global rank 0 writes run.json, metrics.csv and checkpoints.
    """
    import lightning as L
    from torch.utils.data import Subset

    from dfdcap.models.checkpoint import load_checkpoint
    from dfdcap.models.data import check_trainable, check_val_crops, image_size, open_split
    from dfdcap.models.lightning_module import DFFModule, PlainCheckpoints
    from dfdcap.models.run_folder import check_run_folder
    from dfdcap.models.splits import plan_finetune_splits, training_record

    _check_lr(lr)
    _check_batch_size(batch_size)
    if epochs < 1 or batch_size < 1 or crop < 16:
        raise ModelError(f"finetune: need epochs >= 1, batch size >= 1 and crop >= 16 px (got {epochs}, {batch_size}, {crop})")
    data, run_dir = Path(data), Path(run_dir)
    plan = plan_finetune_splits(data, train_split, val_split)  # never selects on test
    train_split, val_split = plan.train_split, plan.val_split
    crop = min(crop, *image_size(data, train_split), *image_size(data, val_split))  # small images: whole frames
    for split in dict.fromkeys((train_split, val_split)):
        check_trainable(data, split)
    init_meta: dict = {}
    if init is not None:
        if config:
            raise ModelError(f"finetune: model options {config} conflict with --init {init} (its config is used)")
        init_model, ckpt = load_checkpoint(init, expected_model=model_name)
        cfg, init_meta = dict(ckpt["config"]), dict(ckpt.get("meta") or {})
    else:
        init_model, cfg = None, model_config(model_name, config, tiny)
    record = training_record(plan, data, init_meta)
    resumed = check_run_folder(run_dir, model_name, data, resume and not fast_dev_run)  # before anything is written
    train_ds = open_split(data, train_split, crop, True)
    val_ds = open_split(data, val_split, crop, False)
    if plan.held_out:
        train_ds, val_ds = Subset(train_ds, plan.train_indices), Subset(val_ds, plan.val_indices)
    if len(train_ds) == 0:
        raise ModelError(f"{data}: split {train_split!r} is empty")
    check_val_crops(data, val_ds, val_split, crop)
    plain = PlainCheckpoints(run_dir / "last.pt", run_dir / "best.pt", {"kind": "finetune", **record})
    trainer = _trainer(run_dir, max_epochs=epochs, fast_dev_run=fast_dev_run, progress=progress, plain=plain,
                       precision=precision, hardware=hardware, extra_callbacks=tuple(callbacks))
    fresh = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)  # after the hardware check: a refused run leaves no folder
    try:
        if trainer.is_global_zero:
            atomic_write_json(run_dir / "run.json", {
                "kind": "finetune", "model": model_name, "config": cfg, "data": str(data.resolve()),
                "init": str(Path(init).resolve()) if init else None, "epochs": epochs, "batch_size": batch_size,
                "crop": crop, "frames": list(frames), "lr": lr, "seed": seed, "train_split": train_split, "val_split": val_split,
                "held_out_val": plan.held_out, "train_sessions": plan.train_sessions, "val_sessions": plan.val_sessions,
                "world_size": trainer.world_size,
            })
        L.seed_everything(seed, workers=True, verbose=False)
        module = DFFModule(model_name, cfg, lr=lr, frames=tuple(frames))
        if init_model is not None:  # built from the same config: its weights fit
            module.model.load_state_dict(init_model.state_dict())
        lkw = _loader_kw(hardware)
        train = DataLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=len(train_ds) > batch_size, **lkw)
        val = DataLoader(val_ds, batch_size=batch_size, **lkw)
        _fit(trainer, module, train, val, resumed, run_dir)
    except DatasetError:
        # a dataset read failing before the first checkpoint (a damaged chunk): a fresh folder would hold
        # only run.json and hparams.yaml, which describe no run; leave no folder behind
        if fresh and trainer.is_global_zero and not any((run_dir / k).exists() for k in ("last.ckpt", "last.pt", "best.pt")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return TrainResult(run_dir, run_dir / "best.pt", run_dir / "last.pt", trainer.global_step,
                       trainer.current_epoch, plain.best, resumed, _history(run_dir), trainer.is_global_zero)
