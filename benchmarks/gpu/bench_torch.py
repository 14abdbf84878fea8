#!/usr/bin/env python3
"""bench_torch.py: PyTorch on the same weights and images as bench_cuda, as
the baseline the cuDNN path is compared with (benchmarks/gpu/run-on-gpu.sh).

The weights come from <models>/v1 and <models>/v2 (model.safetensors read with
struct/json and torch.frombuffer, since the safetensors package may be
missing); the images from the t10k IDX file (--data, $FM_DATA or the test
fixtures), repeated to fill the batch. The timed work is the same as
bench_cuda's: uint8 pixels -> /255 -> network -> softmax, argmax and
confidence, with PyTorch's usual inference settings (no_grad, cudnn.benchmark,
channels_last for the CNN). Per (model, precision, batch):
  eager_compute   pixels already on the GPU, eager PyTorch
  eager_copies    plus the H2D copy from pinned memory and the D2H copies of
                  the results (non_blocking)
  graph_compute   the compute captured in a CUDA graph and replayed
  graph_copies    copies and compute captured in one CUDA graph
Times come from CUDA events around back-to-back iterations.
"""
import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# Parameter names and shapes of docs/model-format.md.
ARCHS = {
    "mlp": {"fc1.weight": [256, 784], "fc1.bias": [256], "fc2.weight": [128, 256], "fc2.bias": [128],
            "fc3.weight": [10, 128], "fc3.bias": [10]},
    "cnn": {"conv1.weight": [32, 1, 3, 3], "conv1.bias": [32], "conv2.weight": [64, 32, 3, 3], "conv2.bias": [64],
            "fc1.weight": [128, 3136], "fc1.bias": [128], "fc2.weight": [10, 128], "fc2.bias": [10]},
}


def read_safetensors(path):
    """{name: float32 tensor} from a safetensors file (F32 only, as fmserve writes)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: shorter than a safetensors header")
    (hlen,) = struct.unpack("<Q", data[:8])
    if 8 + hlen > len(data):
        raise ValueError(f"{path}: header length {hlen} beyond the file")
    header = json.loads(data[8:8 + hlen])
    base = 8 + hlen
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {info['dtype']}, expected F32")
        begin, end = info["data_offsets"]
        buf = bytearray(data[base + begin:base + end])
        out[name] = torch.frombuffer(buf, dtype=torch.float32).reshape(info["shape"]).clone()
    return out


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 256), nn.Linear(256, 128), nn.Linear(128, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(3136, 128), nn.Linear(128, 10)

    def forward(self, x):
        x = x.view(-1, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)  # C,H,W order, as the weights expect
        return self.fc2(F.relu(self.fc1(x)))


def load_model(model_dir):
    with open(os.path.join(model_dir, "model.json")) as f:
        meta = json.load(f)
    arch = meta["architecture"]["type"]
    tensors = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    for name, shape in ARCHS[arch].items():
        if name not in tensors or list(tensors[name].shape) != shape:
            raise ValueError(f"{model_dir}: {name} missing or not {shape}")
    net = MLP() if arch == "mlp" else CNN()
    net.load_state_dict(tensors, strict=True)
    return arch, net.eval()


def read_idx_images(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != 0x803 or rows * cols != 784:
        raise ValueError(f"{path}: not an IDX image file of 28x28 images")
    return torch.frombuffer(bytearray(data[16:16 + n * 784]), dtype=torch.uint8).reshape(n, 784)


def find_images(data_dir):
    dirs = [d for d in (data_dir, os.environ.get("FM_DATA")) if d]
    dirs.append(os.path.join(ROOT, "tests", "fixtures", "fashion-mnist"))
    for d in dirs:
        for name in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"):
            p = os.path.join(d, name)
            if os.path.exists(p):
                return p
    raise FileNotFoundError("no t10k-images-idx3-ubyte[.gz] in --data, $FM_DATA or the fixtures")


DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def set_precision(prec):
    tf32 = prec == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def pipeline(net, x_u8, dtype):
    x = x_u8.to(dtype) * (1.0 / 255.0)
    probs = torch.softmax(net(x).float(), dim=1)
    conf, labels = probs.max(dim=1)
    return probs, labels.to(torch.int32), conf


def time_cuda(fn, target_ms):
    """Milliseconds per call of fn, back to back, from CUDA events."""
    for _ in range(3):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        fn()
    stop.record()
    stop.synchronize()
    per = max(start.elapsed_time(stop) / 3.0, 1e-3)
    iters = int(min(max(target_ms / per, 5), 20000))
    start.record()
    for _ in range(iters):
        fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / iters


def time_cpu(fn, target_ms):
    fn()
    t0, n = time.perf_counter(), 0
    while n < 3 or (time.perf_counter() - t0) * 1000 < target_ms:
        fn()
        n += 1
    return (time.perf_counter() - t0) * 1000 / n


def capture(fn):
    """A CUDA graph of fn (warmed up on a side stream first, as PyTorch asks)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def bench_point(net, images, batch, prec, device, target_ms):
    dtype = DTYPES[prec]
    x_host = images[:batch].clone()
    cuda = device.type == "cuda"
    if cuda:
        x_host = x_host.pin_memory()
    x_dev = x_host.to(device)
    probs_h = torch.empty(batch, 10, dtype=torch.float32, pin_memory=cuda)
    labels_h = torch.empty(batch, dtype=torch.int32, pin_memory=cuda)
    conf_h = torch.empty(batch, dtype=torch.float32, pin_memory=cuda)

    def compute():
        return pipeline(net, x_dev, dtype)

    def with_copies():
        x_dev.copy_(x_host, non_blocking=True)
        p, l, c = pipeline(net, x_dev, dtype)
        probs_h.copy_(p, non_blocking=True)
        labels_h.copy_(l, non_blocking=True)
        conf_h.copy_(c, non_blocking=True)

    res = {}
    timer = time_cuda if cuda else time_cpu
    res["eager_compute_ms"] = timer(compute, target_ms)
    res["eager_copies_ms"] = timer(with_copies, target_ms)
    if cuda:
        g1 = capture(compute)
        res["graph_compute_ms"] = timer(g1.replay, target_ms)
        g2 = capture(with_copies)
        res["graph_copies_ms"] = timer(g2.replay, target_ms)
        del g1, g2
    for k in list(res):
        res[k.replace("_ms", "_ips")] = batch / (res[k] / 1000.0)
    # The same outputs as bench_cuda computes, for a quick sanity line.
    p, l, c = pipeline(net, x_dev, dtype)
    res["sum_probs"] = float(p.sum().item()) / batch
    res["first_labels"] = l[:8].tolist()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=os.path.join(ROOT, "models"), help="directory with v1/ and v2/")
    ap.add_argument("--data", default=None, help="Fashion-MNIST directory (t10k images)")
    ap.add_argument("--batches", default="1,16,256,1024,4096,8192")
    ap.add_argument("--precisions", default="fp32,tf32,fp16,bf16")
    ap.add_argument("--only", choices=["v1", "v2"], default=None)
    ap.add_argument("--ms", type=float, default=150.0, help="measuring time per point")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run of the script")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_torch: CUDA is not available to PyTorch", file=sys.stderr)
        return 77
    batches = [int(b) for b in args.batches.split(",")]
    precs = args.precisions.split(",")
    for p in precs:
        if p not in DTYPES:
            raise SystemExit(f"bench_torch: unknown precision {p}")
    img_path = find_images(args.data)
    images = read_idx_images(img_path)
    reps = math.ceil(max(batches) / images.shape[0])
    images = images.repeat(reps, 1)[:max(batches)]
    torch.backends.cudnn.benchmark = True
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"bench_torch: torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {dev_name}, "
          f"images {img_path}")
    out = open(args.json, "w") if args.json else None
    with torch.inference_mode():
        for version in ("v1", "v2"):
            if args.only and version != args.only:
                continue
            arch, base = load_model(os.path.join(args.models, version))
            print(f"\n{version} ({arch}) from {os.path.join(args.models, version)}")
            for prec in precs:
                set_precision(prec)
                net = MLP() if arch == "mlp" else CNN()
                net.load_state_dict(base.state_dict())
                net = net.to(device=device, dtype=DTYPES[prec]).eval()
                if arch == "cnn":
                    net = net.to(memory_format=torch.channels_last)
                print(f"  {prec}:")
                print(f"  {'batch':>6} {'eager img/s':>14} {'+copies':>14} {'graph img/s':>14} {'+copies':>14}")
                for batch in batches:
                    r = bench_point(net, images, batch, prec, device, args.ms)
                    print(f"  {batch:>6} {r['eager_compute_ips']:>14.0f} {r['eager_copies_ips']:>14.0f} "
                          f"{r.get('graph_compute_ips', 0):>14.0f} {r.get('graph_copies_ips', 0):>14.0f}")
                    if out:
                        rec = {"bench": "torch", "model": version, "arch": arch, "precision": prec, "batch": batch,
                               "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
                               "device": dev_name}
                        rec.update(r)
                        out.write(json.dumps(rec) + "\n")
                        out.flush()
                del net
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
