"""HTML report pages: claims.json, escaping, links, and images rendered by a real headless browser."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from browser import chromium, images_loaded
from lrtransfer.report.html import (Claim, ExperimentReport, Figure, read_report, write_experiment_report,
                                    write_index)

CLAIMS = [
    Claim("A1: µP best LR transfers across width", "best-LR shift, width 32→512 (grid steps)", "≤ 1", "0", "PASS"),
    Claim("A2: SP best LR shifts", "best-LR shift (grid steps)", "≥ 2", "1", "FAIL"),
    Claim("A3: sharpness is super consistent", "spread of λmax", "≤ 10%", "14%", "SOFT-FAIL", soft=True),
    Claim("A4: loss curves collapse", "curve spread", "≤ 5%", "3%", "SOFT-PASS", soft=True),
    Claim("A5: depth transfer", "best-LR shift", "≤ 1", "n/a (missing runs)", "MISSING"),
    Claim("A6: FLeRM transfers", "best-LR shift", "≤ 1", "-1, could be ≤ -1", "UNDETERMINED"),
]


def _report(experiment: str, figures: list[Figure], claims: list[Claim] | None = None, **kw) -> ExperimentReport:
    fields = dict(experiment=experiment, scale="smoke", title=f"{experiment} sweep", description="Loss vs LR.",
                  figures=figures, claims=CLAIMS if claims is None else claims, runs=12)
    return ExperimentReport(**(fields | kw))


def _png(path: Path, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3), dpi=50)
    ax.plot([0, 1, 2], [seed, seed + 1, seed - 1])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


class _Tags(HTMLParser):
    """Collects hrefs and img srcs, so tests check the links a browser would follow."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.imgs: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"] or "")
        elif tag == "img":
            self.imgs.append(dict(attrs))


def _tags(path: Path) -> _Tags:
    parser = _Tags()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


# --- unit tests ------------------------------------------------------------------------------------------------


def test_claims_json_round_trips(tmp_path):
    report = _report("sc_width", [], runs=7)
    write_experiment_report(report, tmp_path)
    data = json.loads((tmp_path / "claims.json").read_text(encoding="utf-8"))
    assert (data["experiment"], data["scale"], data["runs"]) == ("sc_width", "smoke", 7)
    assert [Claim(**c) for c in data["claims"]] == CLAIMS
    assert data["summary"] == {"PASS": 1, "FAIL": 1, "SOFT-FAIL": 1, "SOFT-PASS": 1, "UNDETERMINED": 1, "MISSING": 1}
    _png(tmp_path / "fig.png", 0)
    full = _report("sc_width", [Figure("fig.png", "a caption")], runs=7)
    full.notes.append("a note")
    full.setup = {"mup": {"model.width": "32, 128", "train.batch_size": "32"}, "sp": {"model.width": "32"}}
    write_experiment_report(full, tmp_path)
    assert read_report(tmp_path / "claims.json") == full  # what the index of a later partial rebuild reads
    two_pass = _report("x", [], claims=[CLAIMS[0], CLAIMS[0], CLAIMS[4]])
    assert two_pass.summary == {"PASS": 2, "FAIL": 0, "SOFT-FAIL": 0, "SOFT-PASS": 0, "UNDETERMINED": 0, "MISSING": 1}


def test_unknown_status_is_rejected():
    with pytest.raises(ValueError, match="PASSED"):
        Claim("c", "m", "t", "1", "PASSED")
    with pytest.raises(ValueError, match="'ok'"):
        Claim("c", "m", "t", "1", "PASS", by_seed={"0": "ok"})


def test_verdicts_on_each_seed_alone_get_a_column_and_round_trip(tmp_path):
    seeded = Claim("A5: µP sharpens", "λ(T)/λ(0)", "≥ 2", "1.9", "FAIL", by_seed={"0": "PASS", "1": "FAIL"})
    report = _report("sc_width", [], claims=[seeded, CLAIMS[0]])
    text = write_experiment_report(report, tmp_path).read_text(encoding="utf-8")
    assert "<th>each seed alone</th>" in text and "<td>seed 0 PASS, seed 1 FAIL</td>" in text
    assert read_report(tmp_path / "claims.json") == report
    plain = write_experiment_report(_report("sc_width", []), tmp_path / "plain").read_text(encoding="utf-8")
    assert "each seed alone" not in plain


def test_user_text_is_escaped(tmp_path):
    evil = Claim("<b>bold</b> & co", "m<1>", "≤ 1", "<i>0</i>", "PASS")
    report = _report("esc", [], claims=[evil], description="<script>alert('x')</script>", title="A<B",
                     notes=["<img src=x onerror=alert(1)>"], setup={"<s>": {"data.path": "<img src=y>"}})
    page = write_experiment_report(report, tmp_path).read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page
    assert "&lt;i&gt;0&lt;/i&gt;" in page and "<title>A&lt;B</title>" in page
    assert "<th>&lt;s&gt;</th>" in page and "<td>&lt;img src=y&gt;</td>" in page
    assert _tags(tmp_path / "index.html").imgs == []  # the note's <img> stayed text
    assert '<meta charset="utf-8">' in page and "≤ 1" in page


def test_experiment_page_structure(tmp_path):
    _png(tmp_path / "loss vs lr.png", 0)
    page = write_experiment_report(_report("sc_width", [Figure("loss vs lr.png", "Loss against LR")]), tmp_path)
    tags = _tags(page)
    assert tags.hrefs == ["../index.html"]
    assert tags.imgs == [{"src": "loss%20vs%20lr.png", "alt": "Loss against LR"}]
    text = page.read_text(encoding="utf-8")
    assert "<figcaption>Loss against LR</figcaption>" in text
    for status in ("pass", "fail", "soft-fail", "soft-pass", "missing"):
        assert f'<td class="s-{status}">' in text
    assert "http" not in text and "<script" not in text  # self-contained, no JavaScript


def test_missing_png_raises_and_writes_nothing(tmp_path):
    _png(tmp_path / "present.png", 0)
    figures = [Figure("present.png", "ok"), Figure("absent.png", "gone")]
    with pytest.raises(FileNotFoundError, match="absent.png"):
        write_experiment_report(_report("sc_width", figures), tmp_path)
    assert not (tmp_path / "index.html").exists() and not (tmp_path / "claims.json").exists()


def test_index_links_every_experiment(tmp_path):
    reports = [_report(e, [], runs=n) for e, n in [("sc_width", 10), ("sc_depth", 5), ("fslr_width", 3)]]
    for r in reports:
        write_experiment_report(r, tmp_path / r.experiment)
    index = write_index(reports, tmp_path)
    hrefs = _tags(index).hrefs
    assert hrefs == ["sc_width/index.html", "sc_depth/index.html", "fslr_width/index.html"]
    assert all((tmp_path / h).is_file() for h in hrefs)
    text = index.read_text(encoding="utf-8")
    # a hard FAIL and a hard UNDETERMINED per report; soft FAILs are not failures
    assert "Total: 3 experiments, 18 runs, 6 hard claims not passing" in text
    assert '<span class="badge s-pass">3 PASS</span>' in text


# --- real browser ----------------------------------------------------------------------------------------------

# Injected only into a probe copy of the page: the reports themselves contain no JavaScript.
def test_pages_render_inchromium(browser, tmp_path):
    root, profile = tmp_path / "reports", tmp_path / "chrome-profile"
    reports = []
    for i, exp in enumerate(["sc_width", "fslr_depth"]):
        names = [f"{exp}_loss.png", f"{exp}_sharpness.png"]
        for j, name in enumerate(names):
            _png(root / exp / name, 3 * i + j)
        report = _report(exp, [Figure(n, f"caption {n}") for n in names])
        write_experiment_report(report, root / exp)
        reports.append(report)
    index = write_index(reports, root)

    for exp in ("sc_width", "fslr_depth"):
        assert images_loaded(browser, profile, root / exp / "index.html") == (2, 2)
    assert images_loaded(browser, profile, index) == (2, 2)  # one thumbnail per experiment

    # The probe must be able to see a broken image, or the checks above prove nothing.
    (root / "sc_width" / "sc_width_sharpness.png").unlink()
    assert images_loaded(browser, profile, root / "sc_width" / "index.html") == (1, 2)

    shot = tmp_path / "index.png"
    chromium(browser, profile, f"--screenshot={shot}", "--window-size=1000,700", index.as_uri())
    assert shot.is_file() and shot.stat().st_size > 1000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
