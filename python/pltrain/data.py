"""The built-in dataset (data/builtin/fashion-mini.bin.gz, src/trainer/data.ts loadBuiltin) and the
full Fashion-MNIST IDX files, with the same seeded batch order as the TypeScript trainer."""
import gzip
import math
import os
import struct

import numpy as np

DEFAULT_FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"


def package_root():
    here = os.path.dirname(os.path.abspath(__file__))
    d = here
    while True:
        if os.path.exists(os.path.join(d, "data", "builtin")):
            return d
        if os.path.dirname(d) == d:
            raise FileNotFoundError(f"cannot find the package root (with data/builtin) above {here}")
        d = os.path.dirname(d)


class Dataset:
    def __init__(self, name, features, classes, train_x, train_y, test_x, test_y):
        self.name, self.features, self.classes = name, features, classes
        self.train_x, self.train_y, self.test_x, self.test_y = train_x, train_y, test_x, test_y


def load_builtin(path=None):
    path = path or os.path.join(package_root(), "data", "builtin", "fashion-mini.bin.gz")
    with gzip.open(path, "rb") as f:
        b = f.read()
    if b[:4] != b"PLDS":
        raise ValueError(f"{path} is not a PL Trainer dataset")
    version, n_train, n_test, rows, cols, classes = struct.unpack_from("<6I", b, 4)
    if version != 1:
        raise ValueError(f"{path}: unsupported dataset version {version}")
    f_ = rows * cols
    at = 28

    def take(n):
        nonlocal at
        out = np.frombuffer(b, dtype=np.uint8, count=n, offset=at)
        at += n
        return out

    trx, trl, tex, tel = take(n_train * f_), take(n_train), take(n_test * f_), take(n_test)
    to_float = lambda px, n: (px.astype(np.float32) / 255).reshape(n, f_)
    return Dataset("builtin (Fashion-MNIST 14×14 subset)", f_, classes, to_float(trx, n_train), trl.astype(np.int64), to_float(tex, n_test), tel.astype(np.int64))


def read_idx(path, limit=None):
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            with (gzip.open if p.endswith(".gz") else open)(p, "rb") as f:
                b = f.read()
            break
    else:
        raise FileNotFoundError(f"missing Fashion-MNIST file {path}[.gz]")
    if b[0] != 0 or b[1] != 0 or b[2] != 8:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    dims = b[3]
    shape = list(struct.unpack_from(f">{dims}I", b, 4))
    if limit is not None:
        shape[0] = min(shape[0], limit)
    count = int(np.prod(shape))
    return np.frombuffer(b, dtype=np.uint8, count=count, offset=4 + 4 * dims).reshape(shape)


def load_dataset(config, config_dir):
    src = config["data"]["source"]
    if src == "text":
        return load_text(config, config_dir)
    limit = config["data"]["maxTrainExamples"] or None
    if src == "builtin":
        ds = load_builtin()
    elif src == "fashion-mnist":
        d = os.path.join(config_dir, config["data"]["path"]) if config["data"].get("path") else DEFAULT_FASHION_MNIST_PATH
        img, lab = read_idx(os.path.join(d, "train-images-idx3-ubyte"), limit), read_idx(os.path.join(d, "train-labels-idx1-ubyte"), limit)
        timg, tlab = read_idx(os.path.join(d, "t10k-images-idx3-ubyte")), read_idx(os.path.join(d, "t10k-labels-idx1-ubyte"))
        f_ = img.shape[1] * img.shape[2]
        fl = lambda a: (a.astype(np.float32) / 255).reshape(a.shape[0], f_)
        ds = Dataset(f"Fashion-MNIST ({d})", f_, 10, fl(img), lab.astype(np.int64), fl(timg), tlab.astype(np.int64))
    else:
        raise ValueError(f"data.source {src} is not supported by the pytorch engine yet")
    if limit and limit < ds.train_x.shape[0]:
        ds.train_x, ds.train_y = ds.train_x[:limit], ds.train_y[:limit]
    return ds


def batches(n, batch_size, seed):
    """Seeded shuffling epoch after epoch: the LCG and Fisher–Yates of train.ts, so a config gives
    the TF.js trainer's example order."""
    s = (seed & 0xFFFFFFFF) or 1

    def rnd():
        nonlocal s
        s = (s * 1664525 + 1013904223) & 0xFFFFFFFF
        return s / 4294967296

    order = list(range(n))
    while True:
        for i in range(n - 1, 0, -1):
            j = int(rnd() * (i + 1))
            order[i], order[j] = order[j], order[i]
        i = 0
        while i + batch_size <= n or (i < n and batch_size > n):
            yield np.array(order[i:min(n, i + batch_size)], dtype=np.int64)
            i += batch_size


MAX_VOCABULARY = 256  # most token ids a vocabulary gets (textData.ts)
UNKNOWN_SYMBOL = "\ufffd"  # stands for every character outside a capped vocabulary


def spreading_stride(w):
    """The integer nearest W/φ coprime to W (textData.ts spreadingStride)."""
    if w <= 2:
        return 1
    target = round(w / ((1 + math.sqrt(5)) / 2))
    for d in range(w):
        for s in (target - d, target + d):
            if 1 <= s < w and math.gcd(s, w) == 1:
                return s
    return 1


def text_dataset(text, name, context_length, max_train_examples=0, where=None):
    """Character-level windows as src/trainer/textData.ts textTaskData builds them: tokens are code
    points, the vocabulary their sorted distinct characters (above 256 the rarest share the unknown id),
    split 90/10 by position, windows of T + 1 characters strided by T, example i of a split is window
    (i·s) mod W. train_x/train_y are [W, T] token ids (y each x's next character)."""
    where = where or name
    T = context_length
    chars = list(text)
    if not chars:
        raise ValueError(f"text corpus {where} is empty")
    window = T + 1
    if len(chars) < 2 * window:
        raise ValueError(f"text corpus {where} has {len(chars)} characters; contextLength {T} needs at least {2 * window} (a window of {window} to train on and one to test on)")
    frequency = {}
    for ch in chars:
        frequency[ch] = frequency.get(ch, 0) + 1
    kept = list(frequency)
    unknown = None
    if len(kept) > MAX_VOCABULARY:
        kept = sorted(kept, key=lambda ch: (-frequency[ch], ord(ch)))[:MAX_VOCABULARY - 1]
        unknown = MAX_VOCABULARY - 1
    kept.sort(key=ord)
    vocabulary = kept + ([UNKNOWN_SYMBOL] if unknown is not None else [])
    id_of = {ch: i for i, ch in enumerate(kept)}
    ids = np.array([id_of.get(ch, unknown) for ch in chars], dtype=np.int64)
    test_start = min(int(0.9 * len(ids)), len(ids) - window)
    splits = {"train": ids[:test_start], "test": ids[test_start:]}

    def windows_of(split, limit=0):
        toks = splits[split]
        all_windows = (len(toks) - 1) // T
        count = min(limit, all_windows) if limit > 0 else all_windows
        stride = spreading_stride(all_windows if split == "train" else count)
        total = all_windows if split == "train" else count
        starts = (np.arange(count, dtype=np.int64) * stride % total) * T
        offsets = starts[:, None] + np.arange(T, dtype=np.int64)[None, :]
        return toks[offsets], toks[offsets + 1]

    trx, try_ = windows_of("train", max_train_examples)
    tex, tey = windows_of("test")
    ds = Dataset(name, T, len(vocabulary), trx, try_, tex, tey)
    ds.kind, ds.vocabulary = "text", vocabulary
    return ds


def load_text(config, config_dir):
    """`data.source: "text"`: data.path (resolved against the config's folder) or the built-in corpus."""
    path = config["data"].get("path")
    file = os.path.join(config_dir, path) if path else os.path.join(package_root(), "data", "builtin", "devils-dictionary.txt")
    if not os.path.exists(file):
        raise FileNotFoundError(f"text corpus not found: {file}")
    if os.path.isdir(file):
        raise ValueError(f"text corpus {file} is a folder, not a file")
    with open(file, "rb") as f:
        raw = f.read()
    if not raw:
        raise ValueError(f"text corpus {file} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"text corpus {file} is not valid UTF-8 (first invalid byte at offset {e.start})") from None
    name = f"text {file}" if path else "builtin text (The Devil's Dictionary, Ambrose Bierce)"
    return text_dataset(text, name, config["model"]["contextLength"], config["data"]["maxTrainExamples"], file)
