"""What is connected: OpenNI2 devices (URIs), RealSense cameras (serials and models), ADB phones.

Each library is asked on its own; one that is missing or fails becomes a problem line in the
report (saying what to install), never an exception, so `dfdcap devices` always answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dfdcap.errors import DfdcapError


@dataclass(frozen=True)
class FoundDevice:
    """kind: "openni" | "realsense" | "phone"; spec: what to pass to `dfdcap record --sensor/--phone`."""

    kind: str
    spec: str
    model: str
    serial: str
    detail: str = ""


@dataclass
class DeviceReport:
    devices: list[FoundDevice] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # kinds whose library answered

    def of_kind(self, kind: str) -> list[FoundDevice]:
        return [d for d in self.devices if d.kind == kind]


def _openni() -> list[FoundDevice]:
    from dfdcap.capture.openni import list_openni_uris

    return [FoundDevice("openni", f"openni:{d['uri']}", d["name"] or "OpenNI device", d["uri"], d["vendor"])
            for d in list_openni_uris()]


def _realsense() -> list[FoundDevice]:
    from dfdcap.capture.realsense import list_realsense

    return [FoundDevice("realsense", f"realsense:{d['serial']}", d["name"], d["serial"],
                        " ".join(x for x in (d["product_line"], f"fw {d['firmware']}" if d["firmware"] else "") if x))
            for d in list_realsense()]


def _phones() -> list[FoundDevice]:
    """Phones from dfdcap.capture.phone.list_phones() (dicts or objects with serial/model)."""
    try:
        from dfdcap.capture.phone import list_phones
    except ImportError as e:
        raise DfdcapError(f"phone support unavailable ({e})") from None
    out = []
    for p in list_phones():
        get = p.get if isinstance(p, dict) else (lambda k, default=None, _p=p: getattr(_p, k, default))
        serial = str(get("serial", "") or p)
        notes = [str(get("state", "") or "")]
        if get("app_installed", None) is not None:
            notes.append("app answers" if get("app_answers", False) else
                         "app installed, not answering" if get("app_installed", False) else "companion app not installed")
        if get("problem", None):
            notes.append(str(get("problem")))
        out.append(FoundDevice("phone", serial, str(get("model", "") or "phone"), serial, "; ".join(n for n in notes if n)))
    return out


def list_devices(kinds: tuple[str, ...] = ("openni", "realsense", "phone")) -> DeviceReport:
    """Ask each device library what is connected; failures go to `problems`."""
    report = DeviceReport()
    probes = {"openni": _openni, "realsense": _realsense, "phone": _phones}
    for kind in kinds:
        try:
            report.devices += probes[kind]()
            report.checked.append(kind)
        except DfdcapError as e:
            report.problems.append(f"{kind}: {e}")
        except Exception as e:  # a vendor library failing in an unexpected way must not hide the others
            report.problems.append(f"{kind}: {type(e).__name__}: {e}")
    return report
