"""Reference MoE training step in PyTorch (the peer our TensorFlow.js engine is measured against).

input 784, 8 experts each Dense 784->256 ReLU ->10, softmax gate 784->8 weighting expert outputs,
batch 128, softmax cross-entropy, Adam; forward + backward + update. Prints one JSON line.
usage: python3 bench/moe_torch.py [--device cpu|cuda] [--threads N] [--steps N]
"""
import argparse, json, time
import torch

p = argparse.ArgumentParser()
p.add_argument("--device", default="cpu")
p.add_argument("--threads", type=int, default=0)
p.add_argument("--steps", type=int, default=30)
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
dev = torch.device(a.device)
torch.manual_seed(0)
E, B, D, H, C = 8, 128, 784, 256, 10
W1 = torch.nn.Parameter(torch.randn(E, D, H, device=dev) * 0.05)
W2 = torch.nn.Parameter(torch.randn(E, H, C, device=dev) * 0.05)
G = torch.nn.Parameter(torch.randn(D, E, device=dev) * 0.05)
x = torch.randn(B, D, device=dev)
y = torch.randint(0, C, (B,), device=dev)
opt = torch.optim.Adam([W1, W2, G], lr=1e-3)

def step_loop():
    opt.zero_grad()
    g = torch.softmax(x @ G, 1)
    o = 0
    for e in range(E):
        o = o + (torch.relu(x @ W1[e]) @ W2[e]) * g[:, e : e + 1]
    loss = torch.nn.functional.cross_entropy(o, y)
    loss.backward()
    opt.step()
    return loss

def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()

for _ in range(5):
    step_loop()
sync()
t0 = time.perf_counter()
for _ in range(a.steps):
    step_loop()
sync()
ms = (time.perf_counter() - t0) / a.steps * 1000
out = {"engine": f"pytorch {torch.__version__}", "device": a.device if dev.type == "cpu" else torch.cuda.get_device_name(0), "threads": torch.get_num_threads(), "moeStepMs": round(ms, 3)}
print(json.dumps(out))
