"""WeakNAS (Wu et al., NeurIPS 2021): a weak predictor, refit every round, narrows where to sample.

Each round fits a predictor on every arch queried so far (z-scored accuracies), ranks the
candidate set and samples uniformly among the predicted top-M not yet queried. No single fit
has to be accurate: it only has to put good archs in its top-M, and each round's samples teach
the next fit about that promising region.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from nasstudy.methods.base import Arch, SearchMethod, Space, as_arch

PREDICTORS = ("mlp", "gbdt", "rf")


def zscore(values: np.ndarray) -> np.ndarray:
    """Labels with mean 0 and std 1 (std 1 if all equal), so one set of fit knobs suits any metric."""
    values = np.asarray(values, dtype=np.float64)
    std = values.std()
    return (values - values.mean()) / (std if std > 0 else 1.0)


def fit_predictor(
    kind: str, x: np.ndarray, y: np.ndarray, seed: int, layers: int, width: int, epochs: int, lr: float, trees: int
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
    # mlp: full batch and a fixed number of Adam steps (cheap and deterministic); the torch
    # seed only initialises the weights, inside fork_rng so the caller's torch rng is untouched
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dims = [x.shape[1]] + [width] * layers
        mods: list[torch.nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            mods += [torch.nn.Linear(d_in, d_out), torch.nn.ReLU()]
        net = torch.nn.Sequential(*mods, torch.nn.Linear(dims[-1], 1))
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(xt).squeeze(1), yt).backward()
        opt.step()
    net.eval()

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

    The paper's MLP is 4 x 1000; here the default is 2 x 64 trained full batch for 50 Adam steps:
    4 x 1000 costs about 5 s a round on one core (100 seeds x 20-100 rounds would take hours), while
    2 x 64 takes 0.05 s and found the NB201 optimum as fast (mean ~190 queries over 50 seeds).
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
        candidates: int = 10_000,
        mlp_layers: int = 2,
        mlp_width: int = 64,
        mlp_epochs: int = 50,
        mlp_lr: float = 0.01,
        trees: int = 100,
    ) -> None:
        super().__init__(space, rng)
        if predictor not in PREDICTORS:
            raise ValueError(f"weaknas predictor {predictor!r} unknown; allowed: {', '.join(PREDICTORS)}")
        if min(initial, batch, top_m, candidates, mlp_layers, mlp_width, mlp_epochs, trees) < 1 or mlp_lr <= 0:
            raise ValueError("weaknas needs initial, batch, top_m, candidates, mlp_*, trees >= 1 and mlp_lr > 0")
        self.knobs = {
            "initial": int(initial), "batch": int(batch), "top_m": int(top_m), "predictor": predictor,
            "candidates": int(candidates), "mlp_layers": int(mlp_layers), "mlp_width": int(mlp_width),
            "mlp_epochs": int(mlp_epochs), "mlp_lr": float(mlp_lr), "trees": int(trees),
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
        predict = fit_predictor(
            k["predictor"], self._encode(archs), y, self.fit_seed,
            k["mlp_layers"], k["mlp_width"], k["mlp_epochs"], k["mlp_lr"], k["trees"],
        )  # fmt: skip
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
