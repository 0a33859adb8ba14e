"""Static HTML pages for experiment reports.

Each page is self-contained (inline CSS, no JavaScript, no external URLs) because the
reports are opened on cluster and CI machines without network access.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from urllib.parse import quote

# Canonical order; summaries always carry every status so claims.json has a fixed schema.
STATUSES = ("PASS", "FAIL", "SOFT-FAIL", "SOFT-PASS", "UNDETERMINED", "MISSING")
_COLOURS = {"PASS": "#2e9e44", "FAIL": "#d73a3a", "SOFT-FAIL": "#e8a317",
            "SOFT-PASS": "#9bd39b", "UNDETERMINED": "#8fb3d9", "MISSING": "#b0b0b0"}


@dataclass
class Claim:
    claim: str
    metric: str
    threshold: str
    measured: str
    status: str
    soft: bool = False  # a soft claim never counts as a failure of the suite
    # {seed: status} of the same claim read on that seed's runs alone, where the claim reads a seed mean
    by_seed: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A typo'd status would silently drop out of every summary; fail early instead.
        for status in (self.status, *self.by_seed.values()):
            if status not in STATUSES:
                raise ValueError(f"unknown claim status {status!r}; expected one of {STATUSES}")

    @property
    def seed_note(self) -> str:
        """"seed 0 PASS, seed 1 FAIL", or "" when no configuration of the claim's runs had several seeds."""
        return ", ".join(f"seed {seed} {status}" for seed, status in self.by_seed.items())


@dataclass
class Figure:
    filename: str  # PNG file name inside the experiment's report folder
    caption: str


@dataclass
class ExperimentReport:
    experiment: str
    scale: str
    title: str
    description: str
    figures: list[Figure]
    claims: list[Claim]
    runs: int
    notes: list[str] = field(default_factory=list)
    setup: dict[str, dict[str, str]] = field(default_factory=dict)  # {stage: {config key: values}}

    @property
    def summary(self) -> dict[str, int]:
        """Number of claims per status (every status present, zeros included)."""
        counts = dict.fromkeys(STATUSES, 0)
        for c in self.claims:
            counts[c.status] += 1
        return counts


_CSS = "\n".join(
    ["body{font-family:'DejaVu Sans',Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}",
     "table{border-collapse:collapse;margin:1em 0;width:100%}",
     "th,td{border:1px solid #ccc;padding:.35em .6em;text-align:left;vertical-align:top}",
     "th{background:#f2f2f2}",
     "figure{margin:1.5em 0}",
     "img{max-width:100%;height:auto;display:block}",
     "img.thumb{width:260px}",
     "figcaption{font-size:.9em;color:#555;margin-top:.3em}",
     ".badge{display:inline-block;padding:0 .5em;margin-right:.3em;border-radius:3px}"]
    + [f".s-{s.lower()}{{background:{c}}}" for s, c in _COLOURS.items()])


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")


def _status_cell(status: str) -> str:
    # Status values are validated in Claim, so the CSS class name is always safe.
    return f'<td class="s-{status.lower()}">{escape(status)}</td>'


def _table(head: str, rows: list[str]) -> str:
    return "<table>\n" + "\n".join([head, *rows]) + "\n</table>"


def _claims_table(claims: list[Claim]) -> str:
    seeded = any(c.by_seed for c in claims)
    head = ("<tr><th>claim</th><th>metric</th><th>threshold</th><th>measured</th><th>status</th>"
            + ("<th>each seed alone</th>" if seeded else "") + "</tr>")
    rows = [f"<tr><td>{escape(c.claim)}{' <em>(soft)</em>' if c.soft else ''}</td><td>{escape(c.metric)}</td>"
            f"<td>{escape(c.threshold)}</td><td>{escape(c.measured)}</td>{_status_cell(c.status)}"
            + (f"<td>{escape(c.seed_note)}</td>" if seeded else "") + "</tr>"
            for c in claims]
    return _table(head, rows)


def _setup_table(setup: dict[str, dict[str, str]]) -> str:
    stages = list(setup)
    keys = list(dict.fromkeys(k for values in setup.values() for k in values))
    head = "<tr><th>setting</th>" + "".join(f"<th>{escape(s)}</th>" for s in stages) + "</tr>"
    rows = [f"<tr><td><code>{escape(k)}</code></td>" + "".join(f"<td>{escape(setup[s].get(k, ''))}</td>"
                                                                for s in stages) + "</tr>" for k in keys]
    return _table(head, rows)


def _figure(fig: Figure) -> str:
    # quote() keeps odd file names (spaces, '#') valid as relative URLs; escape() makes them valid HTML.
    src = escape(quote(fig.filename))
    return (f'<figure><img src="{src}" alt="{escape(fig.caption)}">'
            f"<figcaption>{escape(fig.caption)}</figcaption></figure>")


def _badges(summary: dict[str, int]) -> str:
    shown = [f'<span class="badge s-{s.lower()}">{n} {escape(s)}</span>' for s, n in summary.items() if n]
    return " ".join(shown) or "no claims"


def write_experiment_report(report: ExperimentReport, out_dir: Path) -> Path:
    """Write out_dir/index.html and out_dir/claims.json; the figures' PNGs must already be in out_dir."""
    out_dir = Path(out_dir)
    for fig in report.figures:
        # A broken <img> is easy to miss in a report, so a missing PNG is an error here.
        if not (out_dir / fig.filename).is_file():
            raise FileNotFoundError(f"figure {fig.filename!r} not found in {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)  # a report without figures may not have its folder yet
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
    body = "\n".join([
        '<p><a href="../index.html">&larr; all experiments</a></p>',
        f"<h1>{escape(report.title)}</h1>",
        f"<p>experiment <code>{escape(report.experiment)}</code> &middot; scale <b>{escape(report.scale)}</b>"
        f" &middot; {report.runs} runs</p>",
        f"<p>{escape(report.description)}</p>",
        "<h2>Claims</h2>", _claims_table(report.claims), f"<p>{_badges(report.summary)}</p>",
        *(["<h2>Notes</h2>", f"<ul>{notes}</ul>"] if notes else []),
        *(["<h2>Setup</h2>", "<p>The settings of the runs above, per stage, as logged in MLflow.</p>",
           _setup_table(report.setup)] if report.setup else []),
        "<h2>Figures</h2>", *(_figure(f) for f in report.figures),
    ])
    html_path = out_dir / "index.html"
    html_path.write_text(_page(report.title, body), encoding="utf-8")
    data = {"experiment": report.experiment, "scale": report.scale, "runs": report.runs, "title": report.title,
            "description": report.description, "notes": report.notes, "setup": report.setup, "summary": report.summary,
            "claims": [asdict(c) for c in report.claims], "figures": [asdict(f) for f in report.figures]}
    (out_dir / "claims.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return html_path


def read_report(claims_json: Path) -> ExperimentReport:
    """An experiment's report back from its claims.json (to index reports built by earlier runs)."""
    data = json.loads(Path(claims_json).read_text(encoding="utf-8"))
    return ExperimentReport(data["experiment"], data["scale"], data["title"], data["description"],
                            [Figure(**f) for f in data["figures"]], [Claim(**c) for c in data["claims"]],
                            data["runs"], data["notes"], data.get("setup", {}))


def _thumbnail(report: ExperimentReport) -> str:
    if not report.figures:
        return ""
    fig = report.figures[0]
    src = escape(quote(f"{report.experiment}/{fig.filename}"))
    return f'<img class="thumb" src="{src}" alt="{escape(fig.caption)}">'


def write_index(reports: list[ExperimentReport], root: Path) -> Path:
    """Write root/index.html: one row per experiment plus a total line."""
    head = "<tr><th>experiment</th><th>title</th><th>scale</th><th>runs</th><th>claims</th><th>first figure</th></tr>"
    rows = [f'<tr><td><a href="{escape(quote(r.experiment))}/index.html">{escape(r.experiment)}</a></td>'
            f"<td>{escape(r.title)}</td><td>{escape(r.scale)}</td><td>{r.runs}</td><td>{_badges(r.summary)}</td>"
            f"<td>{_thumbnail(r)}</td></tr>" for r in reports]
    total = dict.fromkeys(STATUSES, 0)
    for r in reports:
        for s, n in r.summary.items():
            total[s] += n
    # Soft claims never fail the suite, so only hard ones that did not pass are called out.
    hard_fails = sum(c.status in ("FAIL", "UNDETERMINED") and not c.soft for r in reports for c in r.claims)
    body = "\n".join([
        "<h1>Experiment reports</h1>",
        "<table>\n" + "\n".join([head, *rows]) + "\n</table>",
        f'<p class="total">Total: {len(reports)} experiments, {sum(r.runs for r in reports)} runs, '
        f"{hard_fails} hard claims not passing &middot; {_badges(total)}</p>",
    ])
    path = Path(root) / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_page("Experiment reports", body), encoding="utf-8")
    return path
