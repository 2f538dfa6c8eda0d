"""RQ-VAE, the route of the official SIDs (docs/upstream.md 3.2; upstream ``rq/rqvae.py``, ``rq/models/*``,
``rq/trainer.py``, ``rq/generate_indices.py``).

    python -m minirec.sids --category Industrial_and_Scientific --method rqvae --epochs 200

- Encoder MLP ``[in, 2048, 1024, 512, 256, 128, 64, 32]`` with ReLU between layers, decoder its mirror;
  Xavier-normal weights, zero biases.
- 3 residual levels x 256 codes x 32 dims, nearest code by squared distance, straight-through estimator;
  each codebook starts as ``KMeans(256, max_iter=100)`` of its own input residual in the first batch.
- Loss ``MSE(x_hat, x) + 1.0 * mean_levels[MSE(e_q, sg(z)) + 0.25 * MSE(sg(e_q), z)]``; AdamW lr 1e-3,
  weight decay 0, gradient-norm clip 1.0, constant LR after 50 linear warm-up steps; one full batch per
  epoch (upstream's batch of 20,480 holds every item).
- Every ``eval_step`` epochs the collision rate ``(N - #distinct code paths) / N`` is measured; the model of
  the strictly lowest rate is kept (``best_collision_model.pth``).
- SIDs: argmin codes, then up to 20 rounds in which each colliding group's last code is re-assigned by
  Sinkhorn (eps 0.003, 50 iterations, float64, distances min-max centred to [-1, 1]).

Upstream trains 10,000 epochs on a GPU; the default here is 200. On CPU one epoch over 3,686 MiniLM vectors
costs about 150 GFLOP (measured 11-18 s on 2 busy cores), so try ``--epochs 20`` there first. Deviations:
the k-means init is seeded (upstream uses the global NumPy RNG) and the full batch is not shuffled (the loss
is a mean, so shuffling only changed the k-means input order).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import nn
from torch.nn import functional as F

from minirec.sids.codes import collision_groups, tokens_from_codes
from minirec.sids.quantise import Quantised

HIDDEN_LAYERS = [2048, 1024, 512, 256, 128, 64]
E_DIM = 32
BETA = 0.25
QUANT_LOSS_WEIGHT = 1.0
WARMUP_STEPS = 50
SINKHORN_EPSILON = 0.003
SINKHORN_ITERS = 50
DEDUP_ROUNDS = 20


def mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (size_in, size_out) in enumerate(zip(dims[:-1], dims[1:])):
        linear = nn.Linear(size_in, size_out)
        nn.init.xavier_normal_(linear.weight)
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if index < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def sinkhorn(distances: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Upstream ``sinkhorn_algorithm``: alternate row and column normalisation of ``exp(-d / eps)``."""
    q = torch.exp(-distances / epsilon)
    rows, cols = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / rows
        q = q / q.sum(dim=0, keepdim=True) / cols
    return q * rows


def centred(distances: torch.Tensor) -> torch.Tensor:
    """Min-max centring to [-1, 1] before Sinkhorn (upstream ``center_distance_for_constraint``)."""
    middle = (distances.max() + distances.min()) / 2
    return (distances - middle) / (distances.max() - middle + 1e-5)


class RQVAE(nn.Module):
    def __init__(self, in_dim: int, codebook_size: int = 256, levels: int = 3, seed: int = 0):
        super().__init__()
        dims = [in_dim, *HIDDEN_LAYERS, E_DIM]
        self.encoder = mlp(dims)
        self.decoder = mlp(dims[::-1])
        self.codebooks = nn.ParameterList(nn.Parameter(torch.zeros(codebook_size, E_DIM)) for _ in range(levels))
        self.register_buffer("initialised", torch.tensor(False))
        self.seed = seed

    def distances(self, residual: torch.Tensor, level: int) -> torch.Tensor:
        codebook = self.codebooks[level]
        return (residual**2).sum(1, keepdim=True) + (codebook**2).sum(1)[None, :] - 2 * residual @ codebook.T

    @torch.no_grad()
    def _kmeans_init(self, residual: torch.Tensor, level: int) -> None:
        kmeans = KMeans(n_clusters=self.codebooks[level].shape[0], max_iter=100, n_init=1, random_state=self.seed + level)
        kmeans.fit(residual.detach().cpu().numpy())
        self.codebooks[level].copy_(torch.from_numpy(kmeans.cluster_centers_).to(residual))

    def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(quantised z with straight-through gradient, mean level loss, codes (n, levels))``."""
        first_batch = self.training and not bool(self.initialised)
        residual, quantised, losses, codes = z, torch.zeros_like(z), [], []
        for level, codebook in enumerate(self.codebooks):
            if first_batch:
                self._kmeans_init(residual, level)
            code = self.distances(residual, level).argmin(dim=1)
            e_q = codebook[code]
            losses.append(F.mse_loss(e_q, residual.detach()) + BETA * F.mse_loss(e_q.detach(), residual))
            e_q = residual + (e_q - residual).detach()
            residual = residual - e_q
            quantised = quantised + e_q
            codes.append(code)
        if first_batch:
            self.initialised.fill_(True)
        return quantised, torch.stack(losses).mean(), torch.stack(codes, dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        quantised, quant_loss, _ = self.quantise(self.encoder(x))
        x_hat = self.decoder(quantised)
        return F.mse_loss(x_hat, x) + QUANT_LOSS_WEIGHT * quant_loss, x_hat

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantise(self.encoder(x))[2]

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(sum(self.codebooks[level][codes[:, level]] for level in range(codes.shape[1])))

    @torch.no_grad()
    def last_level_distances(self, x: torch.Tensor) -> torch.Tensor:
        """Distances of each item's last residual (earlier levels by argmin) to the last codebook."""
        residual = self.encoder(x)
        last = len(self.codebooks) - 1
        for level in range(last):
            residual = residual - self.codebooks[level][self.distances(residual, level).argmin(dim=1)]
        return self.distances(residual, last)


def collision_rate(codes: np.ndarray) -> float:
    return 1.0 - len({tuple(row) for row in codes.tolist()}) / len(codes)


def train(model: RQVAE, x: torch.Tensor, epochs: int, lr: float = 1e-3, eval_step: int = 50) -> tuple[dict, list[dict]]:
    """Full-batch training; return the state of the lowest collision rate and the evaluation history."""
    from minirec.logs import progress

    if epochs < 1:
        raise ValueError(f"rqvae needs at least one epoch, got {epochs}")
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    # transformers' constant schedule with warm-up: factor step / warmup, then 1 (so the first step has lr 0).
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, step / WARMUP_STEPS))
    eval_step = min(eval_step, epochs)
    best_rate, best_state, history = np.inf, None, []
    with progress(epochs, "rqvae epochs", "epoch", "sids") as bar:
        for epoch in range(epochs):
            bar.update(1)
            model.train()
            optimiser.zero_grad()
            loss, _ = model(x)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"rqvae loss is {loss.item()} at epoch {epoch}")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            if (epoch + 1) % eval_step:
                continue
            model.eval()
            rate = collision_rate(model.codes(x).cpu().numpy())
            history.append({"epoch": epoch + 1, "loss": loss.item(), "collision_rate": rate})
            if rate < best_rate:
                best_rate, best_state = rate, copy.deepcopy(model.state_dict())
    return best_state, history


def dedup_last_level(model: RQVAE, x: torch.Tensor, codes: np.ndarray) -> tuple[np.ndarray, int]:
    """Upstream's collision loop; identical embeddings get identical Sinkhorn rows, so they stay together.

    Upstream re-encodes each group every round; the model is fixed, so the last-level distances are computed
    once and each group's Sinkhorn (over that group's rows, centred within the group) is unchanged.
    """
    distances = model.last_level_distances(x)
    codes = codes.copy()
    rounds = 0
    while rounds < DEDUP_ROUNDS and (groups := collision_groups(codes)):
        for rows in groups:
            plan = sinkhorn(centred(distances[rows]).double(), SINKHORN_EPSILON, SINKHORN_ITERS)
            codes[rows, -1] = plan.argmax(dim=1).cpu().numpy()
        rounds += 1
    return codes, rounds


def run(
    embeddings: np.ndarray,
    codebook_size: int = 256,
    levels: int = 3,
    seed: int = 0,
    epochs: int = 200,
    lr: float = 1e-3,
    eval_step: int = 50,
    device: str = "cpu",
) -> Quantised:
    torch.manual_seed(seed)
    np.random.seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)).to(device)
    model = RQVAE(x.shape[1], codebook_size, levels, seed).to(device)
    best_state, history = train(model, x, epochs, lr, eval_step)
    model.load_state_dict(best_state)
    model.eval()
    argmin_codes = model.codes(x).cpu().numpy()
    codes, rounds = dedup_last_level(model, x, argmin_codes)
    recon = model.decode_codes(torch.from_numpy(codes).to(device))
    best = min(history, key=lambda h: h["collision_rate"])
    return Quantised(
        codes=codes,
        tokens=tokens_from_codes(codes),
        recon_mse=float(F.mse_loss(recon, x).item()),
        params={
            "codebook_size": codebook_size,
            "levels": levels,
            "epochs": epochs,
            "lr": lr,
            "eval_step": min(eval_step, epochs),
            "e_dim": E_DIM,
            "device": device,
        },
        metrics={
            "rqvae_best_epoch": best["epoch"],
            "rqvae_argmin_collision_rate": collision_rate(argmin_codes),
            "rqvae_final_collision_rate": collision_rate(codes),
            "rqvae_sinkhorn_rounds": rounds,
        },
        history=history,
        artifacts={"checkpoint": {
            "state_dict": {k: v.cpu() for k, v in best_state.items()},
            "config": {"in_dim": x.shape[1], "codebook_size": codebook_size, "levels": levels, "seed": seed},
            "best_epoch": best["epoch"],
        }},
    )
