"""Evaluation reports as Markdown tables: retrieval per model, protocol and part; identify() per rule."""

from __future__ import annotations

from pathlib import Path

from snapmatch.evaluation.retrieval import FEW_PHOTOS

_LABELS = {"P1": "P1", "FEW": f"FEW (catalog images + {FEW_PHOTOS} photos)", "P3": "P3 (catalog images only)"}


def format_report(reports: list[dict]) -> str:
    lines = ["| model | adapt | protocol | products | queries | Recall@1 (± s.e.) | Recall@5 | MAP@R |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for report in reports:
        name = report.get("label") or Path(report["model"]).name
        for adapt, part in _parts(report):
            for protocol, label in _LABELS.items():
                if protocol not in part:
                    continue
                rows = [("all", part[protocol])]
                rows += [(group, {**part[protocol][group], "adapted": part[protocol]["adapted"]})
                         for group in ("seen", "unseen") if group in part[protocol]]
                for group, r in rows:
                    lines.append(_row(name, adapt, label, group, r))
            if "P2" in part:
                for key, group in (("trained_on_them", "trained on them"), ("never_trained_on_them", "added on device")):
                    lines.append(_row(name, adapt, "P2", group, part["P2"][key]))
    open_rows = [(report, adapt, part) for report in reports for adapt, part in _parts(report) if "OPEN" in part]
    if open_rows:
        target = open_rows[0][2]["OPEN"]["target_precision"]
        lines += ["", f"identify() with a third of the products unknown (calibrated rules: target precision {target}, "
                  "fitted on half the queries, measured on the other half, both ways)", "",
                  "| model | adapt | rule | precision | known named right | unknown rejected |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for report, adapt, part in open_rows:
            for rule, o in part["OPEN"]["rules"].items():
                lines.append(f"| {report.get('label') or Path(report['model']).name} | {adapt} | {rule} | "
                             f"{o['precision']:.3f} | {o['known_named_right']:.3f} | {o['unknown_rejected']:.3f} |")
    notes = {report.get("split_origin") for report in reports} - {"the model's training split", "given"}
    if notes:
        lines += ["", "Seen / unseen rows need the model's own training split of this dataset; "
                  "without one every product's standing is unknown and only `all` is shown."]
    return "\n".join(lines)


def _row(name: str, adapt: str, protocol: str, group: str, r: dict) -> str:
    if adapt == "on" and r.get("adapted") is False:
        adapt = "on (not fitted: too few photos)"
    se = r.get("recall@1_se")
    error = f" ± {se:.3f}" if se is not None and se == se else ""
    return (f"| {name} | {adapt} | {protocol} | {group} | {r['queries']} | {r['recall@1']:.3f}{error} | "
            f"{r['recall@5']:.3f} | {r['map@r']:.3f} |")


def _parts(report: dict):
    yield "off", report
    if "adapted" in report:
        yield "on", report["adapted"]
