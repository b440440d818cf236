"""`python -m pltrain`: the PyTorch engine's command line, the same as `pltrain` (src/trainer/cli.ts).
Exits 0 when the run completes or is stopped, 1 when it fails, 2 for a bad command line or config."""
import argparse
import asyncio
import json
import os
import sys
import time

from . import config as cfg
from .rundir import RunDirRefused
from .train import Trainer, _reason

USAGE = """usage: pltrain --config FILE [--steps N] [--run-dir DIR]
       pltrain --resume RUN_DIR        continue a killed or failed run from its last checkpoint"""


def _safe_name(name):
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:60] or "run"


def main(argv):
    p = argparse.ArgumentParser(prog="pltrain", usage=USAGE, add_help=True)
    p.add_argument("--config")
    p.add_argument("--resume")
    p.add_argument("--steps", type=int)
    p.add_argument("--run-dir")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return 0 if e.code == 0 else 2
    try:
        if args.resume:
            run_dir = os.path.abspath(args.resume)
            with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
                snapshot = json.load(f)
            # A snapshot from before the annealed pruner (upgrade.ts upgradeConfigSnapshot): its
            # pruning.every/threshold have no meaning now and are dropped; the rest is kept.
            if isinstance(snapshot, dict) and isinstance(snapshot.get("pruning"), dict):
                snapshot["pruning"] = {k: v for k, v in snapshot["pruning"].items() if k not in ("every", "threshold")}
            config = cfg.resolve(snapshot)
            trainer = Trainer(config, run_dir, run_dir, resume=True)
        elif args.config:
            path = os.path.abspath(args.config)
            config = cfg.load(path, args.steps)
            run_dir = os.path.abspath(args.run_dir or os.path.join(os.getcwd(), ".pltrain", "runs", f"{_safe_name(config['name'])}-{time.strftime('%Y%m%d-%H%M%S')}"))
            trainer = Trainer(config, os.path.dirname(path), run_dir)
        else:
            print(f"missing --config\n{USAGE}", file=sys.stderr)
            return 2
    except cfg.ConfigError as e:
        print(f"{args.config or args.resume}: invalid config", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"{args.config or args.resume}: {e}", file=sys.stderr)
        return 2
    try:
        state = asyncio.run(trainer.run())
    except RunDirRefused as e:
        # A run directory in use or already used: said in one line (exit 2, like a bad config).
        print(str(e), file=sys.stderr)
        return 2
    except OSError as e:
        # Before the run could record anything (a planted link where it must write, say): one line.
        print(f"pltrain: {_reason(e)}", file=sys.stderr)
        return 1
    return 1 if state == "failed" else 0
