#!/usr/bin/env python3
"""PyTorch reference for the `training` bench suite: the same Llama step in plain PyTorch.

Architecture and step match bench/Federated.Benchmarks/TrainingBenchmark.cs: 6 layers, hidden 512, 8 heads,
intermediate 1376, vocab 32000, untied head, RMSNorm, rotary embeddings (rotate_half), SiLU MLP, causal attention;
one optimiser step = forward, token-mean cross-entropy, backward, grad-norm clip 1.0, AdamW. LoRA r=8, alpha 16 on
q/k/v/o/gate/up/down (A and B trained, and FFA with A frozen), and full fine-tuning. Median over repeats.

Usage (Debian's python3-torch): /usr/bin/python3 bench/pytorch_reference.py [--threads 2] [--repeats 5] [--quick]
Prints one JSON object with the same keys as `Federated.Benchmarks training --json`.
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LoraLinear(nn.Module):
    """nn.Linear plus PEFT-style lora_A (kaiming-uniform, a=sqrt(5)) and lora_B (zeros), scaled by alpha / r."""

    def __init__(self, in_f, out_f, rank=0, alpha=0.0, freeze_a=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_f, in_f) * 0.02)
        self.rank = rank
        if rank > 0:
            self.lora_A = nn.Parameter(torch.empty(rank, in_f))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.lora_A.requires_grad_(not freeze_a)
            self.lora_B = nn.Parameter(torch.zeros(out_f, rank))
            self.scaling = alpha / rank

    def forward(self, x):
        y = F.linear(x, self.weight)
        if self.rank > 0:
            y = y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        return y


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Layer(nn.Module):
    def __init__(self, c, lora):
        super().__init__()
        h, d = c["hidden"], c["hidden"] // c["heads"]
        self.heads, self.kv, self.d = c["heads"], c["kv_heads"], d
        self.input_layernorm = RMSNorm(h, 1e-5)
        self.post_attention_layernorm = RMSNorm(h, 1e-5)
        self.q_proj = LoraLinear(h, self.heads * d, **lora)
        self.k_proj = LoraLinear(h, self.kv * d, **lora)
        self.v_proj = LoraLinear(h, self.kv * d, **lora)
        self.o_proj = LoraLinear(self.heads * d, h, **lora)
        self.gate_proj = LoraLinear(h, c["intermediate"], **lora)
        self.up_proj = LoraLinear(h, c["intermediate"], **lora)
        self.down_proj = LoraLinear(c["intermediate"], h, **lora)

    def forward(self, x, cos, sin, causal):
        b, t, _ = x.shape
        y = self.input_layernorm(x)
        q = self.q_proj(y).view(b, t, self.heads, self.d).transpose(1, 2)
        k = self.k_proj(y).view(b, t, self.kv, self.d).transpose(1, 2)
        v = self.v_proj(y).view(b, t, self.kv, self.d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        g = self.heads // self.kv
        if g > 1:
            k = k[:, :, None].expand(b, self.kv, g, t, self.d).reshape(b, self.heads, t, self.d)
            v = v[:, :, None].expand(b, self.kv, g, t, self.d).reshape(b, self.heads, t, self.d)
        if hasattr(F, "scaled_dot_product_attention"):
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # torch < 2.0 (Debian bookworm ships 1.13): the textbook masked softmax
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.d)
            a = scores.masked_fill(causal, float("-inf")).softmax(-1) @ v
        x = x + self.o_proj(a.transpose(1, 2).reshape(b, t, -1))
        y = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(y)) * self.up_proj(y))


class Llama(nn.Module):
    def __init__(self, c, lora):
        super().__init__()
        self.embed_tokens = nn.Parameter(torch.randn(c["vocab"], c["hidden"]) * 0.02)
        self.layers = nn.ModuleList(Layer(c, lora) for _ in range(c["layers"]))
        self.norm = RMSNorm(c["hidden"], 1e-5)
        self.lm_head = LoraLinear(c["hidden"], c["vocab"])
        d = c["hidden"] // c["heads"]
        inv = 1.0 / (10000.0 ** (torch.arange(0, d, 2).float() / d))
        freqs = torch.outer(torch.arange(c["seq"]).float(), inv)
        emb = torch.cat((freqs, freqs), -1)
        self.cos, self.sin = emb.cos(), emb.sin()
        self.causal = torch.ones(c["seq"], c["seq"], dtype=torch.bool).triu(1)

    def forward(self, ids):
        x = self.embed_tokens[ids]
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.causal)
        return self.lm_head(self.norm(x))


def measure(c, ids, labels, lora, full, repeats):
    torch.manual_seed(1)
    model = Llama(c, lora)
    for name, p in model.named_parameters():
        p.requires_grad_(full if "lora_" not in name else p.requires_grad)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        opt.zero_grad()
        logits = model(ids)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    step()  # warm-up, as the C# suite
    times, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return statistics.median(times), statistics.median(cpu)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rank", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    c = dict(layers=6, hidden=512, heads=8, kv_heads=8, intermediate=1376, vocab=32000,
             seq=64 if args.quick else 256, batch=2 if args.quick else 8)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, c["vocab"], (c["batch"], c["seq"]), generator=g)
    labels = torch.cat([ids[:, 1:], torch.full((c["batch"], 1), -100)], 1)
    tokens = c["batch"] * c["seq"]
    r = args.rank
    lora, lora_cpu = measure(c, ids, labels, dict(rank=r, alpha=2 * r), False, args.repeats)
    ffa, ffa_cpu = measure(c, ids, labels, dict(rank=r, alpha=2 * r, freeze_a=True), False, args.repeats)
    full, full_cpu = measure(c, ids, labels, dict(), True, args.repeats)
    print(json.dumps({
        "suite": "training-pytorch-reference", "torch_version": torch.__version__, "device": "cpu",
        "torch_threads": args.threads, "layers": c["layers"], "hidden": c["hidden"], "heads": c["heads"],
        "vocab": c["vocab"], "seq": c["seq"], "batch": c["batch"], "lora_rank": r, "repeats": args.repeats,
        "lora_step_seconds_median": round(lora, 4), "lora_tokens_per_second": round(tokens / lora, 1),
        "ffa_lora_step_seconds_median": round(ffa, 4), "ffa_lora_tokens_per_second": round(tokens / ffa, 1),
        "full_step_seconds_median": round(full, 4), "full_tokens_per_second": round(tokens / full, 1),
        "lora_step_cpu_seconds_median": round(lora_cpu, 4), "ffa_lora_step_cpu_seconds_median": round(ffa_cpu, 4),
        "full_step_cpu_seconds_median": round(full_cpu, 4),
    }))


if __name__ == "__main__":
    main()
