"""Which stacks fine-tuning trains on and selects its checkpoint on, and what evaluate may trust.

Fine-tuning never selects on `test`. With a `val` split in the file it selects on that; without
one it holds out every stack of one session of the train split (the last session name in sorted
order; sessions come from each sample's provenance JSON) and selects on those; with a single
session it refuses and says how to make a val split.

What a checkpoint was trained on is recorded in its meta (`training_record`): the data file,
the train/val split names and the sessions of each. `training_use` compares that with the
split evaluate is about to score, by session where the file names sessions, else by file + split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dfdcap.errors import ModelError

VAL_NAMES = ("val", "validation")
NEVER_SELECT_ON = ("test",)


@dataclass(frozen=True)
class SplitPlan:
    """train_indices / val_indices: samples of the split to use (None = all of it)."""

    train_split: str
    val_split: str
    train_indices: list[int] | None
    val_indices: list[int] | None
    train_sessions: list[str]
    val_sessions: list[str]
    held_out: bool  # val is a held-out session of the train split


def split_sessions(data: str | Path, split: str) -> list[str | None]:
    """Per sample of `split`, the session it came from (None where the file does not say)."""
    from dfdcap.dataset.h5io import open_dataset

    with open_dataset(data) as f:
        return f.sessions(split)


def _named(sessions: list[str | None], idx: list[int] | None = None) -> list[str]:
    pick = sessions if idx is None else [sessions[i] for i in idx]
    return sorted({s for s in pick if s})


def plan_finetune_splits(data: str | Path, train_split: str | None = None, val_split: str | None = None) -> SplitPlan:
    """Choose the train and selection stacks of a dataset file (see the module docstring)."""
    from dfdcap.models.data import dataset_splits

    splits = dataset_splits(data)
    train_split = train_split or "train"
    for name, role in ((train_split, "train on"), (val_split, "select the checkpoint on")):
        if name in NEVER_SELECT_ON:
            raise ModelError(f"{data}: finetune does not {role} the {name!r} split (it is for the final evaluation); "
                             f"use a val split (`dfdcap build-dataset ... --val SESSION`)")
    if train_split not in splits:
        raise ModelError(f"{data}: no {train_split!r} split to train on (file has: {', '.join(splits) or 'none'})")
    train_sessions = split_sessions(data, train_split)
    if val_split is None:
        val_split = next((s for s in VAL_NAMES if s in splits), None)
    if val_split is not None:
        if val_split not in splits:
            raise ModelError(f"{data}: no {val_split!r} split (file has: {', '.join(splits)})")
        return SplitPlan(train_split, val_split, None, None, _named(train_sessions),
                         _named(split_sessions(data, val_split)), False)
    return _hold_out_session(data, train_split, train_sessions)


def _hold_out_session(data: str | Path, train_split: str, sessions: list[str | None]) -> SplitPlan:
    names = _named(sessions)
    if len(names) < 2 or any(s is None for s in sessions):
        found = f"one session ({names[0]})" if len(names) == 1 else "no session names"
        raise ModelError(
            f"{data}: no val split, and the {train_split!r} split holds stacks of {found}, so no session can be held out "
            f"to select the checkpoint on (never test); record another session and rebuild with it as val: "
            f"`dfdcap build-dataset SESSION_A SESSION_B --calib ... --val SESSION_B -o ...`"
        )
    held = names[-1]
    train_idx = [i for i, s in enumerate(sessions) if s != held]
    val_idx = [i for i, s in enumerate(sessions) if s == held]
    return SplitPlan(train_split, train_split, train_idx, val_idx, _named(sessions, train_idx), [held], True)


def training_record(plan: SplitPlan, data: str | Path, init_meta: dict | None = None) -> dict:
    """The checkpoint meta fields that say what the weights were trained and selected on.

    Sessions an --init checkpoint was trained on are carried over (the weights saw them too).
    """
    prior = init_meta or {}
    return {
        "data": str(Path(data).resolve()),
        "train_split": plan.train_split,
        "val_split": plan.val_split,
        "train_sessions": sorted(set(plan.train_sessions) | set(prior.get("train_sessions") or [])),
        "val_sessions": sorted(set(plan.val_sessions) | set(prior.get("val_sessions") or [])),
        "held_out_val": plan.held_out,
    }


def _same_file(recorded: str | None, data: str | Path) -> bool:
    if not recorded:
        return False
    try:
        return Path(recorded).resolve() == Path(data).resolve()
    except OSError:
        return False


def training_use(meta: dict, data: str | Path, split: str, sessions: list[str | None]) -> str | None:
    """'trained on' / 'selected the checkpoint on' when the scored split overlaps the checkpoint's
    training data (None when it does not, or when the checkpoint records none: e.g. synthetic only).
    """
    trained = set(meta.get("train_sessions") or [])
    selected = set(meta.get("val_sessions") or [])
    have = {s for s in sessions if s}
    if have and (trained or selected):
        if have & trained:
            return f"trained on (sessions {', '.join(sorted(have & trained))})"
        if have & selected:
            return f"selected the checkpoint on (sessions {', '.join(sorted(have & selected))})"
        return None
    if _same_file(meta.get("data"), data):
        if split == meta.get("train_split"):
            return "trained on"
        if split == meta.get("val_split"):
            return "selected the checkpoint on"
    return None
