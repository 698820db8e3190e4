"""WeakNAS (Wu et al., NeurIPS 2021): a weak predictor, refit every round, narrows where to sample.

Each round fits a predictor on every arch queried so far (z-scored accuracies), ranks the
candidate set and samples uniformly among the predicted top-M not yet queried. No single fit
has to be accurate: it only has to put good archs in its top-M, and each round's samples teach
the next fit about that promising region.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from nasstudy.methods.base import Arch, SearchMethod, Space, as_arch

PREDICTORS = ("mlp", "gbdt", "rf")


def zscore(values: np.ndarray) -> np.ndarray:
    """Labels with mean 0 and std 1 (std 1 if all equal), so one set of fit knobs suits any metric."""
    values = np.asarray(values, dtype=np.float64)
    std = values.std()
    return (values - values.mean()) / (std if std > 0 else 1.0)


@dataclass(frozen=True)
class MlpRegime:
    """The MLP predictor and how it is trained: the authors' sklearn MLPRegressor(hidden_layer_sizes=
    [1000] * 4, max_iter=100) with sklearn's defaults (Adam lr 1e-3, minibatches of 200, L2 1e-4,
    and its convergence stop: no epoch loss better than the best by `tol` for more than `patience`
    epochs in a row; tol 0 trains every epoch)."""

    layers: int = 4
    width: int = 1000
    epochs: int = 100
    lr: float = 1e-3
    batch: int = 200
    l2: float = 1e-4
    tol: float = 1e-4
    patience: int = 10


def make_mlp(inputs: int, seed: int, regime: MlpRegime) -> torch.nn.Sequential:
    """`regime.layers` ReLU layers of `regime.width`, then one output, initialised as sklearn does:
    weights and biases uniform in +-sqrt(6 / (fan_in + fan_out)) (Glorot), not torch's default
    (+-1/sqrt(fan_in)), which starts the small default net too small to fit in 100 Adam steps.
    Inside fork_rng, so the caller's torch rng is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dims = [inputs] + [regime.width] * regime.layers
        mods: list[torch.nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            mods += [torch.nn.Linear(d_in, d_out), torch.nn.ReLU()]
        net = torch.nn.Sequential(*mods, torch.nn.Linear(dims[-1], 1))
        for m in net:
            if isinstance(m, torch.nn.Linear):
                bound = math.sqrt(6.0 / (m.in_features + m.out_features))
                torch.nn.init.uniform_(m.weight, -bound, bound)
                torch.nn.init.uniform_(m.bias, -bound, bound)
    return net


def train_mlp(x: np.ndarray, y: np.ndarray, seed: int, regime: MlpRegime) -> torch.nn.Sequential:
    """An MLP fit on (x, y) as sklearn's MLPRegressor does: up to `epochs` passes over the data in
    shuffled minibatches of `batch` (the last one smaller), Adam, loss mean((y - pred)^2) / 2 plus
    l2 / 2 * sum(weight^2) / (minibatch size), biases not penalised; it stops early once the epoch's
    mean loss has not beaten the best by `tol` for more than `patience` epochs (sklearn's
    n_iter_no_change). `seed` fixes the initial weights (make_mlp) and the shuffles."""
    net = make_mlp(x.shape[1], seed, regime)
    shuffle = torch.Generator().manual_seed(seed)
    weights = [m.weight for m in net if isinstance(m, torch.nn.Linear)]
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=regime.lr)
    best, stale = math.inf, 0
    for _ in range(regime.epochs):
        total = 0.0
        for idx in torch.randperm(len(xt), generator=shuffle).split(regime.batch):
            loss = ((net(xt[idx]).squeeze(1) - yt[idx]) ** 2).mean() / 2
            loss = loss + regime.l2 / 2 * sum((w**2).sum() for w in weights) / len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        epoch_loss = total / len(xt)
        stale = stale + 1 if epoch_loss > best - regime.tol else 0
        best = min(best, epoch_loss)
        if regime.tol > 0 and stale > regime.patience:
            break
    return net.eval()


def fit_predictor(
    kind: str, x: np.ndarray, y: np.ndarray, seed: int, regime: MlpRegime, trees: int
) -> Callable[[np.ndarray], np.ndarray]:
    """Fit predictor `kind` on (x, y); return its predict function. `seed` fixes every random choice."""
    if kind == "gbdt":
        from sklearn.ensemble import GradientBoostingRegressor

        model = GradientBoostingRegressor(n_estimators=trees, random_state=seed).fit(x, y)
        return model.predict
    if kind == "rf":
        from sklearn.ensemble import RandomForestRegressor

        model = RandomForestRegressor(n_estimators=trees, random_state=seed, n_jobs=1).fit(x, y)
        return model.predict
    net = train_mlp(x, y, seed, regime)

    def predict(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.as_tensor(z, dtype=torch.float32)).squeeze(1).double().numpy()

    return predict


class WeakNAS(SearchMethod):
    """`initial` uniform samples, then rounds: refit the predictor once `batch` new archs were told,
    and draw proposals uniformly from its top-`top_m` candidates not yet queried (the best-ranked
    unqueried ones if fewer than asked are left there).

    Candidates: `space.enumerate()` if the space has it (NB201: all 15,625), else `candidates`
    distinct samples drawn once from a seed the method's rng gives at construction (kept in the
    state, so a resumed search ranks the same pool). Proposals of a batched `ask(n)` all come from
    the latest fit; `ask(1)` ten times samples the same top-M set without replacement, which has the
    same distribution as one `ask(10)`. The fit and the torch seed it used are kept in the state by
    their size and seed; loading refits on that prefix of the history, which gives the same model.
    `predicted_best()` is the latest fit's top-1 candidate (found "for free" in the authors' count).

    The MLP trains as the authors' (sklearn MLPRegressor defaults: Adam lr 1e-3, minibatches of 200,
    up to 100 epochs with its convergence stop, L2 1e-4; see `MlpRegime`); its size is a knob. The
    paper's 4 x 1000 costs 20-100 s a fit on one core, too much for 100 seeds x up to 100 fits in a
    CPU benchmark; 4 x 256 still cost 28.6 s per NB201 run (20 seeds, 3 misses), so the default is
    2 x 64 (6.6 s per run, 1 miss in 10 seeds; params/paper.yaml sets 4 x 1000).
    """

    name = "weaknas"

    def __init__(
        self,
        space: Space,
        rng: np.random.Generator,
        initial: int = 10,
        batch: int = 10,
        top_m: int = 100,
        predictor: str = "mlp",
        candidates: int = 5_000,
        mlp_layers: int = 2,
        mlp_width: int = 64,
        mlp_epochs: int = 100,
        mlp_lr: float = 1e-3,
        mlp_batch: int = 200,
        mlp_l2: float = 1e-4,
        mlp_tol: float = 1e-4,
        mlp_patience: int = 10,
        trees: int = 100,
    ) -> None:
        super().__init__(space, rng)
        if predictor not in PREDICTORS:
            raise ValueError(f"weaknas predictor {predictor!r} unknown; allowed: {', '.join(PREDICTORS)}")
        counts = (initial, batch, top_m, candidates, mlp_layers, mlp_width, mlp_epochs, mlp_batch, trees)
        if min(counts) < 1 or mlp_lr <= 0 or mlp_l2 < 0 or mlp_tol < 0 or mlp_patience < 0:
            raise ValueError(
                "weaknas needs initial, batch, top_m, candidates, mlp_layers/width/epochs/batch, trees >= 1, "
                f"mlp_lr > 0, mlp_l2, mlp_tol, mlp_patience >= 0; got {counts}, {mlp_lr=}, {mlp_l2=}, "
                f"{mlp_tol=}, {mlp_patience=}"
            )
        self.regime = MlpRegime(int(mlp_layers), int(mlp_width), int(mlp_epochs), float(mlp_lr), int(mlp_batch),
                                float(mlp_l2), float(mlp_tol), int(mlp_patience))  # fmt: skip
        self.knobs = {
            "initial": int(initial), "batch": int(batch), "top_m": int(top_m), "predictor": predictor,
            "candidates": int(candidates), **{f"mlp_{k}": v for k, v in asdict(self.regime).items()},
            "trees": int(trees),
        }  # fmt: skip
        self.pool_seed = int(rng.integers(2**63))
        self.fit_size = 0  # archs in the latest fit (a prefix of the history); 0: none yet
        self.fit_seed = 0
        self._cands: list[Arch] | None = None  # built on first use: enumerating may take a while
        self._ranking: np.ndarray | None = None  # candidate indices, best predicted first

    def config(self) -> dict:
        return dict(self.knobs)

    # --- candidates and the predictor -------------------------------------------------------

    def candidates(self) -> list[Arch]:
        """The set the predictor ranks (the whole space when it can be enumerated)."""
        if self._cands is None:
            enumerate_ = getattr(self.space, "enumerate", None)
            if enumerate_ is not None:
                cands = [as_arch(a) for a in enumerate_()]
            else:
                pool_rng, seen_pool, misses = np.random.default_rng(self.pool_seed), set(), 0
                while len(seen_pool) < self.knobs["candidates"] and misses < self.max_tries:
                    arch = as_arch(self.space.sample(pool_rng))
                    misses = misses + 1 if arch in seen_pool else 0
                    seen_pool.add(arch)
                cands = sorted(seen_pool)
            self._cands = cands
            self._row = {a: i for i, a in enumerate(cands)}
            self._x = np.stack([np.asarray(self.space.encode(a), dtype=np.float32) for a in cands])
        return self._cands

    def _encode(self, archs: list[Arch]) -> np.ndarray:
        self.candidates()
        return np.stack([self._x[self._row[a]] if a in self._row else self.space.encode(a) for a in archs])

    def _fit(self) -> None:
        """Refit on history[:fit_size] with torch/sklearn seed `fit_seed`; rank every candidate."""
        archs = [a for a, _ in self.history[: self.fit_size]]
        y = zscore(np.array([m["acc"] for _, m in self.history[: self.fit_size]]))
        k = self.knobs
        predict = fit_predictor(k["predictor"], self._encode(archs), y, self.fit_seed, self.regime, k["trees"])
        scores = predict(self._x)
        self._ranking = np.argsort(-scores, kind="stable")  # ties: the earlier candidate first

    def _observe(self, archs: list[Arch], metrics: list[dict]) -> None:
        n = len(self.history)
        if n >= self.knobs["initial"] and (self.fit_size == 0 or n - self.fit_size >= self.knobs["batch"]):
            self.fit_size, self.fit_seed = n, int(self.rng.integers(2**31))
            self._fit()

    def ranking(self) -> list[Arch]:
        """All candidates, best predicted first, by the latest fit (empty before the first fit)."""
        return [] if self._ranking is None else [self.candidates()[i] for i in self._ranking]

    def predicted_best(self) -> Arch | None:
        """The latest fit's top-1 candidate (queried or not); None before the first fit."""
        return None if self._ranking is None else self.candidates()[int(self._ranking[0])]

    # --- proposals ---------------------------------------------------------------------------

    def _propose(self, n: int) -> list[Arch]:
        cands = self.candidates()
        taken = set(self.seen)
        if self._ranking is None:  # the initial uniform samples
            free = [a for a in cands if a not in taken]
            picks = self.rng.choice(len(free), size=min(n, len(free)), replace=False)
            out = [free[i] for i in picks]
        else:
            top = [cands[i] for i in self._ranking[: self.knobs["top_m"]] if cands[i] not in taken]
            if len(top) >= n:
                out = [top[i] for i in self.rng.choice(len(top), size=n, replace=False)]
            else:  # top-M nearly exhausted: the best-ranked unqueried candidates, as the authors do
                out = [cands[i] for i in self._ranking if cands[i] not in taken][:n]
        if len(out) < n:  # every candidate queried: leave the pool
            out += self.sample_unseen(n - len(out), set(out))
        return out

    # --- state -------------------------------------------------------------------------------

    def _extra_state(self) -> dict:
        return {"pool_seed": self.pool_seed, "fit_size": self.fit_size, "fit_seed": self.fit_seed}

    def _load_extra_state(self, d: dict) -> None:
        if int(d["pool_seed"]) != self.pool_seed:
            self.pool_seed, self._cands = int(d["pool_seed"]), None
        self.fit_size, self.fit_seed, self._ranking = int(d["fit_size"]), int(d["fit_seed"]), None
        if self.fit_size:
            self._fit()
