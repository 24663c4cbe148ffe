"""Analysis of a simulated 10-reader, 60-case reader study (evidence for the reader-study analysis).

Known effects: five junior readers (55-65 % unaided) and five senior readers (70-80 %); in
round 2 each takes the AI's top-1 with probability ``--follow`` (juniors) / half that (seniors);
the AI is right on ``--ai-accuracy`` of the cases. Writes the suite's results JSON, the plots
and the HTML report section, prints the numbers next to the values the simulation implies,
and with ``--screenshot PNG`` renders the report's study section in headless Chromium.

    python benchmarks/study_simulated.py --out benchmarks/results/study_sim [--screenshot docs/study_analysis.png]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from dermino.report.html import write_report
from dermino.report.sections import sections_from_results
from dermino.results import read_results
from dermino.study.analysis import analyse, simulate_answers, write_analysis

LABELS = ["actinic keratosis", "basal cell carcinoma", "benign keratosis", "dermatofibroma",
          "melanocytic nevus", "melanoma", "vascular lesion"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/study_sim")
    ap.add_argument("--readers", type=int, default=10)
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--ai-accuracy", type=float, default=0.85)
    ap.add_argument("--follow", type=float, default=0.6, help="juniors' chance of taking the AI's answer")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--screenshot", help="PNG path for a Chromium screenshot of the report section")
    args = ap.parse_args()
    half = args.readers // 2
    acc = np.r_[np.linspace(0.55, 0.65, half), np.linspace(0.70, 0.80, args.readers - half)]
    follow = np.r_[np.full(half, args.follow), np.full(args.readers - half, args.follow / 2)]
    experience = ["junior"] * half + ["senior"] * (args.readers - half)
    df = simulate_answers(args.readers, args.cases, LABELS, list(acc), list(follow), args.ai_accuracy,
                          seed=args.seed, experience=experience)
    res = analyse(df, LABELS)
    out = Path(args.out)
    write_analysis(res, f"simulated-{args.readers}x{args.cases}", out, vars(args))
    df.to_csv(out / "answers.csv", index=False)
    html, _ = write_report(out, "Reader study (simulated)", sections_from_results(read_results(out), out))
    expected = follow * (args.ai_accuracy - acc)
    m = res.metrics
    print(f"{'measure':<38}{'estimate':>28}{'simulated':>12}")
    rows = [("accuracy round 1", m["accuracy_round1"], acc.mean()),
            ("accuracy round 2", m["accuracy_round2"], (acc + expected).mean()),
            ("change with AI", m["accuracy_change"], expected.mean())]
    for name, metric, truth in rows:
        print(f"{name:<38}{metric.value:>10.3f} [{metric.ci_low:.3f}, {metric.ci_high:.3f}]{truth:>12.3f}")
    print(f"{'paired t-test p':<38}{m['p_ttest'].value:>28.2g}")
    print(f"{'Wilcoxon signed-rank p':<38}{m['p_wilcoxon'].value:>28.2g}")
    for g in res.groups.to_dict("records"):
        sim = expected[[e == g["experience"] for e in experience]].mean()
        print(f"{'change, ' + g['experience']:<38}{g['change']:>10.3f} (p={g['p_value']:.2g}){'':>6}{sim:>12.3f}")
    for k in ("ai_right", "ai_wrong"):
        s = res.switching[k]
        print(f"{'switched to AI, ' + k.replace('_', ' '):<38}{s['rate']:>10.3f} ({s['switched']}/{s['pairs']})")
    print(f"{'Fleiss kappa round 1 -> 2':<38}{m['fleiss_kappa_round1'].value:>10.3f} -> "
          f"{m['fleiss_kappa_round2'].value:.3f}")
    print(f"{'AI accuracy on the cases':<38}{m['ai_accuracy'].value:>10.3f}")
    summary = {k: v.value for k, v in m.items()}
    (out / "summary.json").write_text(json.dumps({"simulated_change": float(expected.mean()), **summary}, indent=2))
    print(f"results, plots and report -> {out} ({html})")
    if args.screenshot:
        shot(html, Path(args.screenshot))


def shot(html: Path, png: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,2000", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=opts)
    try:
        driver.get(html.resolve().as_uri())
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1200, min(int(height) + 40, 4000))
        png.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(png))
    finally:
        driver.quit()
    print(f"screenshot -> {png}")


if __name__ == "__main__":
    main()
