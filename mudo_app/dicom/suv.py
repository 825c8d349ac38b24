"""PET to SUVbw the way the QIBA FDG-PET/CT profile's vendor-neutral pseudo-code does it.

``SUVbw = (stored value * RescaleSlope + RescaleIntercept) * factor``, the rescale taken **per slice**,
and the factor by Units (0054,1001):

* ``BQML``: ``PatientWeight [kg] * 1000 / decayed dose [Bq]``, with ``decayed dose = RadionuclideTotalDose
  * 2 ** (-(scan time - injection time) / RadionuclideHalfLife)``. Needs DecayCorrection ``START`` and
  CorrectedImage with ``ATTN`` and ``DECY``. Scan time: SeriesDate/SeriesTime, unless that is after
  the earliest AcquisitionDate/AcquisitionTime of the series (post-processing reset it), then that
  acquisition time. Injection time: RadiopharmaceuticalStartDateTime, else SeriesDate with
  RadiopharmaceuticalStartTime, a day earlier when that lies after the scan (injection before
  midnight, scan after).
* ``CNTS``: the Philips private SUV scale factor (7053,1000).
* ``GML``: already SUVbw (factor 1).

Anything else, or a missing or non-positive value the formula needs, is refused with
:class:`InputError` naming the attribute.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mudo_app.errors import InputError

PHILIPS_SUV_SCALE = (0x7053, 0x1000)


@dataclass(frozen=True)
class SuvFactor:
    """The SUVbw factor of a PET series and how it was found (written to the case's provenance)."""

    factor: float
    units: str
    how: str
    weight_kg: float | None = None
    dose_bq: float | None = None
    half_life_s: float | None = None
    scan_time: str | None = None
    injection_time: str | None = None
    decay_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_date(text: str, what: str) -> dt.date:
    text = str(text or "").strip().replace(".", "").replace("-", "")
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        raise InputError(f"{what} {text!r} is not a DICOM date (YYYYMMDD)") from None


def parse_time(text: str, what: str) -> dt.time:
    """DICOM TM (``HHMMSS.FFFFFF``, ``HHMM``, ``HH``; old ``HH:MM:SS`` too)."""
    raw = str(text or "").strip().replace(":", "")
    main, _, frac = raw.partition(".")
    if not main.isdigit() or len(main) not in (2, 4, 6) or (frac and not frac.isdigit()):
        raise InputError(f"{what} {text!r} is not a DICOM time (HHMMSS.FFFFFF)")
    hh, mm, ss = int(main[:2]), int(main[2:4] or 0), int(main[4:6] or 0)
    try:
        return dt.time(hh, mm, ss, int((frac + "000000")[:6]) if frac else 0)
    except ValueError:
        raise InputError(f"{what} {text!r} is not a valid time of day") from None


def parse_datetime(text: str, what: str) -> dt.datetime:
    """DICOM DT (``YYYYMMDDHHMMSS.FFFFFF``, an offset ``&ZZXX`` ignored: times are local to the scanner)."""
    raw = str(text or "").strip()
    for sign in "+-":
        if sign in raw[8:]:
            raw = raw[: 8 + raw[8:].index(sign)]
    if len(raw) < 12:
        raise InputError(f"{what} {text!r} is not a DICOM date-time (YYYYMMDDHHMMSS)")
    return dt.datetime.combine(parse_date(raw[:8], what), parse_time(raw[8:], what))


def _positive(ds: Any, name: str, where: str) -> float:
    value = ds.get(name) if ds is not None else None
    try:
        number = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        number = None
    if number is None or not number > 0:
        raise InputError(f"{where}: {name} is missing or not positive ({value!r}); SUVbw cannot be computed")
    return number


def _acquisition(ds: Any) -> dt.datetime | None:
    if ds.get("AcquisitionDateTime"):
        return parse_datetime(ds.AcquisitionDateTime, "AcquisitionDateTime")
    if ds.get("AcquisitionDate") and ds.get("AcquisitionTime"):
        return dt.datetime.combine(
            parse_date(ds.AcquisitionDate, "AcquisitionDate"), parse_time(ds.AcquisitionTime, "AcquisitionTime")
        )
    return None


def suv_factor(slices: Sequence[Any], where: str = "PET series") -> SuvFactor:
    """The SUVbw factor of one PET series from its slices' headers (pydicom datasets)."""
    if not slices:
        raise InputError(f"{where}: no slices")
    ds = slices[0]
    units = str(ds.get("Units", "") or "").strip().upper()
    if units == "GML":
        return SuvFactor(1.0, units, "Units GML: the values are SUVbw already")
    if units == "CNTS":
        element = ds.get(PHILIPS_SUV_SCALE)
        value = float(element.value) if element is not None and element.value not in (None, "") else 0.0
        if not value > 0:
            raise InputError(
                f"{where}: Units CNTS without the Philips SUV scale factor (7053,1000); SUVbw cannot be computed"
            )
        return SuvFactor(value, units, "Units CNTS: the Philips private SUV scale factor (7053,1000)")
    if units != "BQML":
        raise InputError(f"{where}: Units {units or '(empty)'!r} is not BQML, CNTS or GML; SUVbw cannot be computed")
    corrected = {str(v).upper() for v in (ds.get("CorrectedImage") or [])}
    if not {"ATTN", "DECY"} <= corrected:
        raise InputError(
            f"{where}: CorrectedImage {sorted(corrected)} lacks ATTN or DECY (attenuation and decay correction); "
            "SUVbw needs a corrected image"
        )
    decay = str(ds.get("DecayCorrection", "") or "").strip().upper()
    if decay != "START":
        raise InputError(
            f"{where}: DecayCorrection is {decay or '(empty)'!r}, not START; the profile computes SUVbw only for "
            "images decay-corrected to the scan start"
        )
    weight = _positive(ds, "PatientWeight", where)
    info = (ds.get("RadiopharmaceuticalInformationSequence") or [None])[0]
    if info is None:
        raise InputError(f"{where}: RadiopharmaceuticalInformationSequence is missing; SUVbw cannot be computed")
    dose = _positive(info, "RadionuclideTotalDose", where)
    half_life = _positive(info, "RadionuclideHalfLife", where)
    if not ds.get("SeriesDate") or not ds.get("SeriesTime"):
        raise InputError(f"{where}: SeriesDate or SeriesTime is missing; the scan time is unknown")
    series_date = parse_date(ds.SeriesDate, "SeriesDate")
    series_dt = dt.datetime.combine(series_date, parse_time(ds.SeriesTime, "SeriesTime"))
    acquisitions = [a for a in (_acquisition(s) for s in slices) if a is not None]
    earliest = min(acquisitions) if acquisitions else None
    if earliest is None or series_dt <= earliest:
        scan, scan_how = series_dt, "SeriesDate/SeriesTime"
    else:
        scan, scan_how = earliest, "the earliest AcquisitionDate/Time (SeriesTime lies after it)"
    if info.get("RadiopharmaceuticalStartDateTime"):
        injection = parse_datetime(info.RadiopharmaceuticalStartDateTime, "RadiopharmaceuticalStartDateTime")
        inj_how = "RadiopharmaceuticalStartDateTime"
    elif info.get("RadiopharmaceuticalStartTime"):
        injection = dt.datetime.combine(
            series_date, parse_time(info.RadiopharmaceuticalStartTime, "RadiopharmaceuticalStartTime")
        )
        inj_how = "SeriesDate with RadiopharmaceuticalStartTime"
        if injection > scan:
            injection -= dt.timedelta(days=1)
            inj_how += " (the day before: injection before midnight)"
    else:
        raise InputError(
            f"{where}: neither RadiopharmaceuticalStartDateTime nor RadiopharmaceuticalStartTime; "
            "the injection time is unknown"
        )
    elapsed = (scan - injection).total_seconds()
    if elapsed < 0:
        raise InputError(f"{where}: the injection ({injection}) is after the scan ({scan}); SUVbw cannot be computed")
    decayed = dose * 2.0 ** (-elapsed / half_life)
    return SuvFactor(
        weight * 1000.0 / decayed,
        units,
        f"Units BQML, QIBA: weight {weight:g} kg, dose {dose:g} Bq decayed over {elapsed:g} s "
        f"(half-life {half_life:g} s); scan time from {scan_how}, injection time from {inj_how}",
        weight_kg=weight,
        dose_bq=dose,
        half_life_s=half_life,
        scan_time=scan.isoformat(),
        injection_time=injection.isoformat(),
        decay_s=elapsed,
    )
