"""Train the shipped example model: a classic LeNet-5 on MNIST, exported to ONNX.

Trains on the 10,000-image ``train10k`` subset only, scores on all 10,000 ``t10k`` images,
and writes a float32 ONNX graph (opset 13) that takes RAW pixel values 0..255 as
``input`` [N, 1, 28, 28] and returns 10 ``logits`` (no softmax).

The network is trained on x / 255; the 1/255 is then folded into the first convolution's
weights, so the exported graph begins directly with Conv (no Div/Sub/Mul preprocessing).

Needs torch (CPU build), numpy and onnx; onnxruntime is used, if installed, to re-check the
accuracy of the written file. Run from anywhere:

    python examples/train_lenet5.py                      # writes examples/lenet5.onnx
    python examples/train_lenet5.py --write-slices       # also the two .npz data slices

Deterministic on a given machine: fixed seeds, CPU only, 2 threads.
"""

from __future__ import annotations

import argparse
import gzip
import math
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "mnist"
DEFAULT_OUT = REPO_ROOT / "examples" / "lenet5.onnx"

ALLOWED_OPS = {"Conv", "Relu", "MaxPool", "Flatten", "Reshape", "Gemm"}


def read_images(path: Path) -> np.ndarray:
    """idx3-ubyte.gz -> uint8 [N, 28, 28]."""
    return np.frombuffer(gzip.open(path).read(), np.uint8, offset=16).reshape(-1, 28, 28)


def read_labels(path: Path) -> np.ndarray:
    """idx1-ubyte.gz -> uint8 [N]."""
    return np.frombuffer(gzip.open(path).read(), np.uint8, offset=8)


def load_split(data_dir: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    x = read_images(data_dir / f"{prefix}-images-idx3-ubyte.gz")
    y = read_labels(data_dir / f"{prefix}-labels-idx1-ubyte.gz")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{prefix}: {x.shape[0]} images but {y.shape[0]} labels")
    return x, y


def build_model():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2),  # 6 x 28 x 28
        nn.ReLU(),
        nn.MaxPool2d(2),  # 6 x 14 x 14
        nn.Conv2d(6, 16, kernel_size=5),  # 16 x 10 x 10
        nn.ReLU(),
        nn.MaxPool2d(2),  # 16 x 5 x 5
        nn.Flatten(),  # 400
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),  # logits
    )


def augment(x, gen, max_rot_deg=10.0, max_scale=0.1, max_shift_px=2.5):
    """Random small affine jitter (rotation, scale, shift) of a batch [B, 1, 28, 28] in 0..1."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    angle = uniform(-max_rot_deg, max_rot_deg) * (math.pi / 180.0)
    scale = uniform(1.0 - max_scale, 1.0 + max_scale)
    # affine_grid works in normalised coordinates [-1, 1]: one pixel = 2 / 28.
    tx = uniform(-max_shift_px, max_shift_px) * (2.0 / 28.0)
    ty = uniform(-max_shift_px, max_shift_px) * (2.0 / 28.0)
    cos = torch.cos(angle) / scale
    sin = torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def accuracy_torch(model, x_raw_u8: np.ndarray, y: np.ndarray, scale: float) -> float:
    """Top-1 accuracy; the model sees float pixels multiplied by `scale`."""
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x_raw_u8), 1000):
            xb = torch.from_numpy(x_raw_u8[i : i + 1000].astype(np.float32) * scale)
            pred = model(xb.unsqueeze(1)).argmax(1).numpy()
            correct += int((pred == y[i : i + 1000]).sum())
    return correct / len(y)


def train(x_train: np.ndarray, y_train: np.ndarray, epochs: int, seed: int, log=print):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model()

    xt = torch.from_numpy(x_train.astype(np.float32) / 255.0).unsqueeze(1)
    yt = torch.from_numpy(y_train.astype(np.int64))
    batch = 64
    steps_per_epoch = math.ceil(len(xt) / batch)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=2e-3, epochs=epochs, steps_per_epoch=steps_per_epoch, pct_start=0.15
    )
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        total, n = 0.0, 0
        for s in range(steps_per_epoch):
            idx = perm[s * batch : (s + 1) * batch]
            xb = augment(xt[idx], gen)
            loss = F.cross_entropy(model(xb), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            n += len(idx)
        if (epoch + 1) % 5 == 0 or epoch == 0:
            log(f"epoch {epoch + 1:3d}/{epochs}  train loss {total / n:.4f}")
    model.eval()
    return model


def fold_input_scale(model, scale: float) -> None:
    """Make the model take raw pixels: conv1(x * s) == conv1'(x) with W' = W * s, same bias."""
    import torch

    with torch.no_grad():
        model[0].weight.mul_(scale)


def export_onnx(model, out: Path) -> None:
    import inspect

    import torch

    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the legacy TorchScript exporter
    dummy = torch.zeros(1, 1, 28, 28, dtype=torch.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (dummy,),
        str(out),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        opset_version=13,
        do_constant_folding=True,
        export_params=True,
        **kwargs,
    )


def check_onnx(out: Path) -> list[str]:
    import onnx

    m = onnx.load(str(out))
    onnx.checker.check_model(m)
    ops = [n.op_type for n in m.graph.node]
    bad = sorted(set(ops) - ALLOWED_OPS)
    if bad:
        raise RuntimeError(f"exported graph has unexpected op types {bad}: {ops}")
    if ops[0] != "Conv":
        raise RuntimeError(f"exported graph must start with Conv, starts with {ops[0]}")
    return ops


def accuracy_onnxruntime(out: Path, x_u8: np.ndarray, y: np.ndarray) -> float | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    correct = 0
    for i in range(0, len(x_u8), 1000):
        xb = x_u8[i : i + 1000].astype(np.float32)[:, None, :, :]  # raw 0..255
        (logits,) = sess.run(["logits"], {"input": xb})
        correct += int((logits.argmax(1) == y[i : i + 1000]).sum())
    return correct / len(y)


def write_slices(out_dir: Path, x_train, y_train, x_test, y_test) -> None:
    """The two data slices shipped next to the model (uint8, keys x and y)."""
    np.savez_compressed(
        out_dir / "mnist_test_1k.npz",
        x=np.ascontiguousarray(x_test[:1000], dtype=np.uint8),
        y=np.ascontiguousarray(y_test[:1000], dtype=np.uint8),
    )
    np.savez_compressed(
        out_dir / "mnist_calib_200.npz",
        x=np.ascontiguousarray(x_train[:200], dtype=np.uint8),
        y=np.ascontiguousarray(y_train[:200], dtype=np.uint8),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"folder with the MNIST .gz files (default {DEFAULT_DATA_DIR})",
    )
    ap.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"ONNX file to write (default {DEFAULT_OUT})"
    )
    ap.add_argument("--epochs", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--write-slices",
        action="store_true",
        help="also write mnist_test_1k.npz and mnist_calib_200.npz next to --out",
    )
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    np.random.seed(args.seed)

    x_train, y_train = load_split(args.data_dir, "train10k")
    x_test, y_test = load_split(args.data_dir, "t10k")
    print(f"train10k {x_train.shape}, t10k {x_test.shape}, torch {torch.__version__}")

    t0 = time.perf_counter()
    model = train(x_train, y_train, args.epochs, args.seed)
    t_train = time.perf_counter() - t0
    print(f"training time {t_train:.1f} s")

    acc_scaled = accuracy_torch(model, x_test, y_test, 1.0 / 255.0)
    fold_input_scale(model, 1.0 / 255.0)
    acc_raw = accuracy_torch(model, x_test, y_test, 1.0)
    print(f"torch t10k top-1 (x/255 input, before folding): {acc_scaled * 100:.2f} %")
    print(f"torch t10k top-1 (raw 0..255 input, 1/255 folded): {acc_raw * 100:.2f} %")

    export_onnx(model, args.out)
    ops = check_onnx(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    print("ops:", " -> ".join(ops))

    acc_ort = accuracy_onnxruntime(args.out, x_test, y_test)
    if acc_ort is not None:
        print(
            f"onnxruntime t10k top-1 on all {len(y_test):,} images (raw 0..255 input): "
            f"{acc_ort * 100:.2f} %"
        )

    if args.write_slices:
        write_slices(args.out.parent, x_train, y_train, x_test, y_test)
        print(
            f"wrote {args.out.parent / 'mnist_test_1k.npz'} and "
            f"{args.out.parent / 'mnist_calib_200.npz'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
