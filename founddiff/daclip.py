"""DA-CLIP: dose- and anatomy-aware contrastive language-image pre-training (FoundDiff stage 1).

Image side (as the FoundDiff release): a CLIP ModifiedResNet encoder (3-conv stem, anti-aliased
bottlenecks, attention pooling) followed by two heads:
  * head1 -> the *dose* embedding, aligned with learned CLIP-IQA+-style prompts
    "[ctx] high dose CT image." / "[ctx] low dose CT noisy image."; the softmax over the two
    prompts is the dose score;
  * head2 -> the *anatomy* embedding (L2-normalised).
Text side: a small CLIP text transformer trained from scratch on the prompt grammar (no hub
downloads), with learned context vectors in place of the "X" tokens.

Losses (two augmented views per image, ordinal dose labels, full dose = 1.0 included):
  * Rank-N-Contrast (Zha et al. 2023) on the dose embedding with labels log(dose): for each
    anchor i and candidate j, j must be more similar than every k at least as far in dose,
    so similarity falls off with dose distance and unseen doses land between neighbours;
  * supervised contrastive (Khosla et al. 2020) on the anatomy embedding;
  * a pairwise logistic ranking loss on the prompt logit difference, so the text-aligned dose
    score is ordered by dose.
After training, a ridge read-out (embedding -> log dose) and anatomy centroids are fitted on
training slices so the suite can report what DA-CLIP perceives.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ldct_bench.toolkit import ANATOMIES

PROMPTS = ("high dose CT image .", "low dose CT noisy image .")


# ------------------------------------------------------------------------------------------ image side
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride) if stride > 1 else nn.Identity()),
                ("0", nn.Conv2d(inplanes, planes * 4, 1, bias=False)), ("1", nn.BatchNorm2d(planes * 4))]))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.avgpool(F.relu(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class AttentionPool2d(nn.Module):
    """CLIP's QKV attention pooling (without the positional embedding, as FoundDiff calls it),
    so it pools any input size."""

    def __init__(self, embed_dim: int, heads: int, output_dim: int):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(embed_dim, embed_dim) for _ in range(3))
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.heads = heads

    def forward(self, x):
        x = x.flatten(2).permute(2, 0, 1)  # (HW, N, C)
        x = torch.cat([x.mean(0, keepdim=True), x], 0)
        out, _ = F.multi_head_attention_forward(
            x, x, x, x.shape[-1], self.heads, None, torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            None, None, False, 0.0, self.c_proj.weight, self.c_proj.bias, training=self.training, need_weights=False,
            use_separate_proj_weight=True, q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight)
        return out[0]


class ModifiedResNet(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), width: int = 64, heads: int = 32, output_dim: int = 1024, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        inplanes, stages = width, []
        for i, n in enumerate(layers):
            planes = width * 2 ** i
            blocks = [Bottleneck(inplanes, planes, 1 if i == 0 else 2)]
            inplanes = planes * 4
            blocks += [Bottleneck(inplanes, planes) for _ in range(1, n)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.attnpool = AttentionPool2d(width * 32, heads, output_dim)

    def forward(self, x):
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = F.relu(bn(conv(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


# ------------------------------------------------------------------------------------------- text side
class PromptTokenizer:
    """Word-level tokenizer for the prompt grammar; 'X' is the learned-context placeholder."""

    specials = ("<pad>", "<sot>", "<eot>", "X")

    def __init__(self, extra_words=("of", "the", "image", *ANATOMIES)):
        words = sorted({w for p in PROMPTS for w in p.lower().split()} | set(extra_words))
        self.vocab = {t: i for i, t in enumerate((*self.specials, *words))}

    def encode(self, text: str, n_ctx: int, length: int) -> torch.Tensor:
        ids = [self.vocab["<sot>"]] + [self.vocab["X"]] * n_ctx
        for w in text.lower().split():
            if w not in self.vocab:
                raise ValueError(f"prompt word {w!r} is not in the DA-CLIP vocabulary.")
            ids.append(self.vocab[w])
        ids.append(self.vocab["<eot>"])
        if len(ids) > length:
            raise ValueError(f"prompt {text!r} with {n_ctx} context tokens exceeds {length} tokens.")
        return torch.tensor(ids + [self.vocab["<pad>"]] * (length - len(ids)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", nn.GELU()),
                                              ("c_proj", nn.Linear(width * 4, width))]))

    def forward(self, x, mask):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class PromptTextEncoder(nn.Module):
    """CLIP text transformer + CLIP-IQA+ prompt learner (learned context replaces the 'X' tokens)."""

    def __init__(self, embed_dim: int, width: int = 128, layers: int = 3, heads: int = 4, n_ctx: int = 16,
                 length: int = 32):
        super().__init__()
        self.tokenizer = PromptTokenizer()
        tokens = torch.stack([self.tokenizer.encode(p, n_ctx, length) for p in PROMPTS])
        self.register_buffer("tokens", tokens, persistent=False)
        self.n_ctx = n_ctx
        self.token_embedding = nn.Embedding(len(self.tokenizer.vocab), width)
        self.positional_embedding = nn.Parameter(torch.randn(length, width) * 0.01)
        self.ctx = nn.Parameter(torch.randn(n_ctx, width) * 0.02)
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, embed_dim) * width ** -0.5)
        self.register_buffer("mask", torch.full((length, length), float("-inf")).triu(1), persistent=False)

    def forward(self) -> torch.Tensor:
        x = self.token_embedding(self.tokens)
        x = torch.cat([x[:, :1], self.ctx.expand(len(PROMPTS), -1, -1), x[:, 1 + self.n_ctx:]], 1)
        x = (x + self.positional_embedding).permute(1, 0, 2)
        for blk in self.resblocks:
            x = blk(x, self.mask)
        x = self.ln_final(x.permute(1, 0, 2))
        eot = (self.tokens == self.tokenizer.vocab["<eot>"]).float().argmax(-1)
        return x[torch.arange(len(PROMPTS)), eot] @ self.text_projection


# --------------------------------------------------------------------------------------------- DA-CLIP
class DACLIP(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), width: int = 64, heads: int = 32, embed_dim: int = 1024,
                 anatomy_dim: int = 256, text_width: int = 128, text_layers: int = 3, n_ctx: int = 16):
        super().__init__()
        self.visual = ModifiedResNet(layers, width, heads, embed_dim)
        self.head1 = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(inplace=True), nn.Linear(embed_dim, embed_dim))
        self.head2 = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(inplace=True), nn.Linear(embed_dim, anatomy_dim))
        self.text = PromptTextEncoder(embed_dim, text_width, text_layers, max(1, text_width // 32), n_ctx)
        self.logit_scale = math.log(1 / 0.07)  # fixed, as in the release
        # read-outs fitted after training (saved with the weights)
        self.register_buffer("dose_w", torch.zeros(embed_dim))
        self.register_buffer("dose_b", torch.zeros(()))
        self.register_buffer("anatomy_centroids", torch.zeros(len(ANATOMIES), anatomy_dim))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (N, 1, H, W) in [-1, 1] ((HU + 1000) / 3000 mapped to [-1, 1])."""
        feats = self.visual(x)
        dose = F.normalize(self.head1(feats), dim=-1)
        anatomy = F.normalize(self.head2(feats), dim=-1)
        text = F.normalize(self.text(), dim=-1)
        logits = math.exp(self.logit_scale) * dose @ text.t()  # (N, 2): high, low
        return {"dose": dose, "anatomy": anatomy, "logits": logits, "dose_score": logits.softmax(-1)[:, 0]}

    @torch.no_grad()
    def fit_readouts(self, dose_emb: torch.Tensor, log_dose: torch.Tensor, anat_emb: torch.Tensor,
                     anatomy: torch.Tensor, ridge: float = 1e-2) -> None:
        x = torch.cat([dose_emb.double(), torch.ones(len(dose_emb), 1, dtype=torch.float64)], 1)
        reg = ridge * torch.eye(x.shape[1], dtype=torch.float64)
        reg[-1, -1] = 0
        coef = torch.linalg.solve(x.t() @ x + reg, x.t() @ log_dose.double())
        self.dose_w.copy_(coef[:-1].float())
        self.dose_b.copy_(coef[-1].float())
        for k in range(len(ANATOMIES)):
            sel = anatomy == k
            if sel.any():
                self.anatomy_centroids[k] = F.normalize(anat_emb[sel].mean(0), dim=0)

    def estimate(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Estimated dose fraction and anatomy index from a forward pass."""
        dose = torch.exp(out["dose"] @ self.dose_w + self.dose_b)
        anatomy = (out["anatomy"] @ self.anatomy_centroids.t()).argmax(-1)
        return {"dose": dose, "anatomy": anatomy}


# ---------------------------------------------------------------------------------------------- losses
def rank_n_contrast(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Rank-N-Contrast: -log exp(s_ij) / sum_{k: |y_i-y_k| >= |y_i-y_j|} exp(s_ik), over all i != j."""
    n = z.shape[0]
    sim = z @ z.t() / temperature
    dist = (labels[:, None] - labels[None, :]).abs()
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    # denominators: for anchor i and positive j, candidates k != i with dist[i,k] >= dist[i,j]
    mask = (dist[:, None, :] >= dist[:, :, None]) & ~eye[:, None, :]  # (i, j, k)
    denom = torch.logsumexp(sim[:, None, :].expand(n, n, n).masked_fill(~mask, float("-inf")), dim=-1)
    loss = (denom - sim)[~eye]
    return loss.mean()


def supervised_contrastive(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = (z @ z.t() / temperature).masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    count = pos.sum(1).clamp(min=1)
    return -(log_prob.masked_fill(~pos, 0).sum(1) / count)[pos.any(1)].mean()


def pairwise_rank_loss(score: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logistic loss pushing score_i > score_j whenever label_i > label_j."""
    higher = labels[:, None] > labels[None, :]
    if not higher.any():
        return score.sum() * 0
    diff = score[:, None] - score[None, :]
    return F.softplus(-diff[higher]).mean()
