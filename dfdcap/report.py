"""`dfdcap report PATH`: pick the stage's report by what PATH is."""

from __future__ import annotations

from pathlib import Path

from dfdcap.errors import DfdcapError
from dfdcap.fileio import read_json


def write_report(path: Path, output: Path | None = None) -> Path:
    """Dispatch to the report of a calibration file, session, dataset or training run."""
    path = Path(path)
    if not path.exists():
        raise DfdcapError(f"{path}: no such file or folder")
    if path.is_dir() and (path / "session.json").is_file():
        from dfdcap.sync.report import write_sync_report

        return write_sync_report(path, output or path / "sync.png")
    if path.is_dir() and (any(path.glob("*.ckpt")) or any(path.glob("*.pt")) or (path / "metrics.csv").exists()):
        from dfdcap.models.report import write_run_report

        return write_run_report(path, output or path / "report.png")
    if path.suffix in (".h5", ".hdf5"):
        from dfdcap.dataset.report import write_dataset_report

        return write_dataset_report(path, output or path.with_suffix(".png"))
    if path.suffix == ".json":
        d = read_json(path)
        if path.name in ("session.json", "sync.json") and (path.parent / "session.json").is_file():
            raise DfdcapError(f"{path}: a file of the session {path.parent}; give the session folder for its sync report")
        if isinstance(d, dict) and ("T_phone_from_sensor" in d or "phone" in d or "camera" in d):
            from dfdcap.calib.report import write_calibration_report

            return write_calibration_report(path, output or path.with_suffix(".png"))
    raise DfdcapError(f"{path}: not a calibration file, session folder, dataset (.h5) or training run")
