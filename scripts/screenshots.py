"""Make the README's screenshots from a finished run: the HTML report and the terminal summary.

    python scripts/screenshots.py RUN_ID_OR_DIR --out docs/

Needs Debian's chromium (apt-get install chromium). The terminal summary is rendered by rich to SVG exactly as
`reflexopt optimize` prints it, then photographed by headless Chromium like the report.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from rich.console import Console

from reflexopt.cli.render import optimize_summary, prompt_diff
from reflexopt.report import write_report
from reflexopt.runs import find


def shoot(html: Path, png: Path, width: int, height: int) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                        "--hide-scrollbars", f"--window-size={width},{height}", f"--screenshot={png}", html.as_uri()],
                       check=True, capture_output=True, timeout=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = find(args.run)
    with tempfile.TemporaryDirectory() as tmp:
        report = write_report(run, Path(tmp) / "report.html")
        shoot(report, out / "report.png", 1200, 1500)
        summary = json.loads((run / "summary.json").read_text())
        console = Console(record=True, width=100, force_terminal=True, file=io.StringIO())
        console.print(optimize_summary(summary))
        console.print(prompt_diff(summary["baseline_prompt"], summary["best_prompt"]))
        svg = Path(tmp) / "terminal.html"
        svg.write_text("<html><body style='margin:0;background:#fff'>" +
                       console.export_svg(title="reflexopt optimize") + "</body></html>")
        shoot(svg, out / "terminal.png", 1000, 820)
    print(f"wrote {out / 'report.png'} and {out / 'terminal.png'}")


if __name__ == "__main__":
    main()
