"""Progress output (src/trainer/progress.ts): one live line on a terminal, plain lines every 5 % in a log."""
import datetime
import math
import sys
import time

from .protocol import to_exponential


def format_duration(seconds):
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, m, r = s // 3600, (s % 3600) // 60, s % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{r:02d}s" if m else f"{r}s"


def progress_line(p):
    eta = (p["totalSteps"] - p["step"]) / p["stepsPerSec"] if p["stepsPerSec"] > 0 else math.nan
    k = p.get("meanKappa")
    kappa = "–" if k is None else to_exponential(k, 2) if k >= 1e4 else f"{k:.1f}"
    acc = f"  acc {p['accuracy'] * 100:.1f}%" if p.get("accuracy") is not None else f"  ppl {p['perplexity']:.2f}" if p.get("perplexity") is not None else ""
    return f"step {p['step']}/{p['totalSteps']}  loss {p['loss']:.4f}{acc}  mean κ {kappa}  {p['stepsPerSec']:.1f} steps/s  ETA {format_duration(eta)}"


def _iso_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Progress:
    def __init__(self, out=sys.stdout, live=None):
        self.out = out
        self.live = out.isatty() if live is None else live
        self.last_live = 0.0
        self.last_bucket = -1

    def due(self, step, total):
        """Whether update() at `step` would print (the live line at most every 0.1 s, a log line every
        5 %), so a caller can skip building its figures on the other steps."""
        if step >= total:
            return True
        if self.live:
            return time.monotonic() - self.last_live >= 0.1
        return math.floor(step / max(1, total) * 20) != self.last_bucket

    def update(self, p):
        if self.live:
            now = time.monotonic()
            if now - self.last_live < 0.1 and p["step"] < p["totalSteps"]:
                return
            self.last_live = now
            try:
                import shutil

                cols = shutil.get_terminal_size().columns
            except OSError:
                cols = 120
            self.out.write("\r\x1b[2K" + progress_line(p)[: cols - 1])
            self.out.flush()
            return
        bucket = math.floor(p["step"] / max(1, p["totalSteps"]) * 20)
        if bucket != self.last_bucket or p["step"] == p["totalSteps"]:
            self.last_bucket = bucket
            self.out.write(f"{_iso_now()} {progress_line(p)}\n")
            self.out.flush()

    def log(self, message):
        self.out.write(("\r\x1b[2K" if self.live else _iso_now() + " ") + message + "\n")
        self.out.flush()
