"""The README's speed tables: ``edgeconv bench`` on the demo LeNet-5 and on the public
models of ../shared/cases (when that folder is present), plus the ablation.

    python benchmarks/speed.py [--out benchmarks/results] [--rounds 9] [--threads 2]

For each model it writes ``<out>/<model>.md`` (the markdown tables), ``.json`` (the full
report of ``edgeconv bench --json``) and ``.png`` (the bar chart), and prints the tables.
Nothing here is a test and nothing asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = REPO.parent / "shared" / "cases"
MODELS = [
    REPO / "examples" / "lenet5.onnx",
    CASES / "mnist-8.onnx",
    CASES / "lenet5_pytorch2.0_opset10_gemm_flatten.onnx",
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--cold", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="also N-thread runs")
    ap.add_argument("--no-ablation", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for model in MODELS:
        if not model.exists():
            print(f"skipped {model} (not present)")
            continue
        stem = model.stem
        cmd = [
            sys.executable, "-m", "edgeconv.bench", str(model),
            "--rounds", str(args.rounds), "--iters", str(args.iters), "--cold", str(args.cold),
            "--json", "--markdown", str(out / f"{stem}.md"), "--plot", str(out / f"{stem}.png"),
        ]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if r.returncode != 0:
            print(f"{model.name}: failed\n{r.stderr[-2000:]}")
            continue
        report = json.loads(r.stdout.strip().splitlines()[-1])
        (out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
        print(f"## {model.name} (load average during the run: {report['machine']['load']})")
        print((out / f"{stem}.md").read_text())
    if not args.no_ablation:
        r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "ablation.py"),
                            "--rounds", str(args.rounds)], capture_output=True, text=True,
                           cwd=REPO)
        (out / "ablation.md").write_text(r.stdout)
        print(r.stdout if r.returncode == 0 else r.stderr[-2000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
