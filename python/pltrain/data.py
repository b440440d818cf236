"""The built-in dataset (data/builtin/fashion-mini.bin.gz, src/trainer/data.ts loadBuiltin) and the
full Fashion-MNIST IDX files, with the same seeded batch order as the TypeScript trainer."""
import gzip
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
