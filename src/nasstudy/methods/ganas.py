"""GA-NAS: generative adversarial NAS (Rezaei et al., IJCAI 2021), as DESIGN.md §5 describes it.

No code was released. The loop follows the paper: query a random initial set; each iteration take
the top-k of everything queried as the "real" set, train a discriminator to tell it from generator
samples, train the generator by policy gradient with the discriminator's output as reward, then
sample and query a batch of new archs. The two networks are small substitutes (see `GANAS`).
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import torch
from torch import nn

from nasstudy.methods.base import Arch, SearchMethod, Space, as_arch


class Generator(nn.Module):
    """Autoregressive model over the space's decisions: a GRU reads the previous choice (one token
    per (decision, option), so the token also says where it is) and one linear head scores the
    options of the next decision. Space-agnostic: only `decision_sizes` shapes it."""

    def __init__(self, sizes: list[int], hidden: int) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.offsets = [int(x) for x in np.cumsum([0, *self.sizes[:-1]])]
        n_tokens = sum(self.sizes)
        self.embed = nn.Embedding(n_tokens + 1, hidden)  # the last token starts the sequence
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_tokens)
        # step i may only pick among decision i's options: -inf elsewhere
        mask = torch.full((len(self.sizes), n_tokens), -math.inf)
        for i, (o, s) in enumerate(zip(self.offsets, self.sizes)):
            mask[i, o : o + s] = 0.0
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("offset_t", torch.tensor(self.offsets), persistent=False)
        self.start = n_tokens

    def log_prob(self, archs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-arch log-probability and entropy of a (batch, decisions) tensor of choices,
        all steps in one GRU call (teacher forcing)."""
        tokens = archs + self.offset_t  # global token of each choice
        start = torch.full((archs.shape[0], 1), self.start, dtype=torch.long)
        inputs = torch.cat([start, tokens[:, :-1]], dim=1)
        out, _ = self.gru(self.embed(inputs))
        logp = torch.log_softmax(self.head(out) + self.mask, dim=-1)  # each step over its own options
        picked = logp.gather(2, tokens.unsqueeze(2)).squeeze(2).sum(1)
        p = logp.exp()
        entropy = -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum((1, 2))
        return picked, entropy

    @torch.no_grad()
    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """`n` archs as a (n, decisions) tensor of choices."""
        token = torch.full((n, 1), self.start, dtype=torch.long)
        h = None
        picks = []
        for o, s in zip(self.offsets, self.sizes):
            out, h = self.gru(self.embed(token), h)
            probs = torch.softmax(self.head(out[:, 0])[:, o : o + s], dim=1)
            # inverse-CDF draw: far cheaper than torch.multinomial for tiny categoricals
            u = torch.rand(n, 1, generator=gen)
            pick = (probs.cumsum(1) < u).sum(1).clamp_(max=s - 1)
            picks.append(pick)
            token = (pick + o).unsqueeze(1)
        return torch.stack(picks, dim=1)


class GANAS(SearchMethod):
    """GA-NAS over any space with the generic API.

    Substitutes (DESIGN.md §5 allows them): the paper's discriminator is a pairwise, relativistic
    Siamese GNN; here it is an MLP over `space.encode(arch)` trained with binary cross-entropy
    (top-k = real, generator samples = fake). The paper's generator is a GNN encoder + GRU decoder;
    here it is a GRU decoder over the space's decisions (`Generator`). The generator is trained by
    REINFORCE with a moving-average baseline, reward = the discriminator's probability of "real";
    `ppo_clip > 0` switches to PPO's clipped objective (`ppo_epochs` passes per sample batch),
    since which of the two the paper used was not confirmed.

    Knobs. From the paper's loop: `initial` (random archs first), `top_k` (the real set), `batch`
    (new archs queried per iteration), `disc_steps`, `gen_steps`. Ours (the paper's values could
    not be read here; chosen small so 1,000 table queries take seconds on one CPU core):
    `samples` (generator samples per training step), `hidden` (GRU width, embedding and
    discriminator hidden size), `lr_gen`, `lr_disc` (Adam), `baseline_decay`, `entropy` (bonus
    weight against collapse), `ppo_clip`, `ppo_epochs`, `sample_rounds` (generator batches of
    `4 * samples` tried to find `batch` unseen archs; then uniform unseen samples fill the rest).

    Between `ask`s the networks, Adam states, the baseline and the not-yet-asked samples of the
    last iteration are saved as extra state; torch's randomness comes from a generator seeded from
    the method's numpy rng, so a resumed run continues exactly. Call with torch single-threaded
    (`seed_torch(..., threads=1)`) for bit-identical runs across machines; it is faster here too.
    """

    name = "ganas"

    def __init__(
        self,
        space: Space,
        rng: np.random.Generator,
        initial: int = 20,
        top_k: int = 10,
        batch: int = 10,
        disc_steps: int = 5,
        gen_steps: int = 5,
        samples: int = 32,
        hidden: int = 32,
        lr_gen: float = 0.01,
        lr_disc: float = 0.01,
        baseline_decay: float = 0.9,
        entropy: float = 0.1,
        ppo_clip: float = 0.0,
        ppo_epochs: int = 4,
        sample_rounds: int = 20,
    ) -> None:
        super().__init__(space, rng)
        ints = {"initial": initial, "top_k": top_k, "batch": batch, "samples": samples, "hidden": hidden}
        ints |= {"ppo_epochs": ppo_epochs, "sample_rounds": sample_rounds}
        for key, value in ints.items():
            if int(value) < 1:
                raise ValueError(f"ganas needs {key} >= 1, got {value}")
        if disc_steps < 0 or gen_steps < 0 or lr_gen <= 0 or lr_disc <= 0 or entropy < 0 or ppo_clip < 0:
            raise ValueError("ganas needs disc_steps, gen_steps, entropy, ppo_clip >= 0 and lr_gen, lr_disc > 0")
        if not 0 <= baseline_decay < 1:
            raise ValueError(f"ganas needs 0 <= baseline_decay < 1, got {baseline_decay}")
        self.knobs = {
            "initial": int(initial),
            "top_k": int(top_k),
            "batch": int(batch),
            "disc_steps": int(disc_steps),
            "gen_steps": int(gen_steps),
            "samples": int(samples),
            "hidden": int(hidden),
            "lr_gen": float(lr_gen),
            "lr_disc": float(lr_disc),
            "baseline_decay": float(baseline_decay),
            "entropy": float(entropy),
            "ppo_clip": float(ppo_clip),
            "ppo_epochs": int(ppo_epochs),
            "sample_rounds": int(sample_rounds),
        }
        k = self.knobs
        width = len(space.encode(tuple(0 for _ in space.decision_sizes)))
        # build under a private torch seed so the global torch rng is neither used nor moved
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**63)))
            self.generator = Generator(space.decision_sizes, k["hidden"])
            self.disc = nn.Sequential(
                nn.Linear(width, k["hidden"]), nn.ReLU(), nn.Linear(k["hidden"], k["hidden"]), nn.ReLU(),
                nn.Linear(k["hidden"], 1),
            )  # fmt: skip
        self.opt_gen = torch.optim.Adam(self.generator.parameters(), lr=k["lr_gen"])
        self.opt_disc = torch.optim.Adam(self.disc.parameters(), lr=k["lr_disc"])
        self.baseline: float | None = None  # moving average of the reward; None until the first step
        self.pending: list[Arch] = []  # the last iteration's samples not yet asked
        self.iterations = 0
        self.fallbacks = 0  # archs G could not supply unseen, drawn uniformly instead (a diagnostic)
        self._codes: dict[Arch, torch.Tensor] = {}  # encode() cache

    def config(self) -> dict:
        return dict(self.knobs)

    # --- the search loop ---------------------------------------------------------------------

    def _propose(self, n: int) -> list[Arch]:
        n_random = min(n, max(0, self.knobs["initial"] - len(self.history)))
        out = self.sample_unseen(n_random)
        taken = self.seen | set(out)
        while len(out) < n:
            self.pending = [a for a in self.pending if a not in taken]
            if not self.pending:
                if not self.history:  # a first ask beyond `initial`: nothing to learn from yet
                    return out + self.sample_unseen(n - len(out), taken)
                self.iteration(taken)
            arch = self.pending.pop(0)
            taken.add(arch)
            out.append(arch)
        return out

    def top(self) -> list[Arch]:
        """The top-`top_k` archs told so far by acc (the earliest first on ties): the real set."""
        order = sorted(range(len(self.history)), key=lambda i: (-self.history[i][1]["acc"], i))
        return [self.history[i][0] for i in order[: self.knobs["top_k"]]]

    def iteration(self, taken: set[Arch]) -> None:
        """One GA-NAS iteration: train D then G against the current top-k, then fill `pending`
        with `batch` new archs from G (none in `taken`)."""
        gen = torch.Generator().manual_seed(int(self.rng.integers(2**63)))
        real = self._encode(self.top())
        for _ in range(self.knobs["disc_steps"]):
            self._disc_step(real, gen)
        for _ in range(self.knobs["gen_steps"]):
            self._gen_step(gen)
        self.pending = self._new_archs(taken, gen)
        self.iterations += 1

    def _disc_step(self, real: torch.Tensor, gen: torch.Generator) -> None:
        fake = self._encode([as_arch(a) for a in self.generator.sample(self.knobs["samples"], gen).tolist()])
        bce = nn.functional.binary_cross_entropy_with_logits
        lr, lf = self.disc(real)[:, 0], self.disc(fake)[:, 0]
        loss = bce(lr, torch.ones_like(lr)) + bce(lf, torch.zeros_like(lf))  # balanced classes
        self.opt_disc.zero_grad()
        loss.backward()
        self.opt_disc.step()

    def _gen_step(self, gen: torch.Generator) -> None:
        archs = self.generator.sample(self.knobs["samples"], gen)
        with torch.no_grad():
            reward = torch.sigmoid(self.disc(self._encode([as_arch(a) for a in archs.tolist()])))[:, 0]
        mean = float(reward.mean())
        decay = self.knobs["baseline_decay"]
        self.baseline = mean if self.baseline is None else decay * self.baseline + (1 - decay) * mean
        advantage = reward - self.baseline
        clip = self.knobs["ppo_clip"]
        if clip > 0:
            with torch.no_grad():
                old, _ = self.generator.log_prob(archs)
            for _ in range(self.knobs["ppo_epochs"]):
                logp, ent = self.generator.log_prob(archs)
                ratio = torch.exp(logp - old)
                surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage)
                self._step_gen(-surrogate.mean() - self.knobs["entropy"] * ent.mean())
        else:
            logp, ent = self.generator.log_prob(archs)
            self._step_gen(-(advantage * logp).mean() - self.knobs["entropy"] * ent.mean())

    def _step_gen(self, loss: torch.Tensor) -> None:
        self.opt_gen.zero_grad()
        loss.backward()
        self.opt_gen.step()

    def _new_archs(self, taken: set[Arch], gen: torch.Generator) -> list[Arch]:
        """`batch` distinct archs sampled from G and not in `taken`; if G keeps repeating known
        archs (it has converged onto the top-k), uniform unseen samples fill the rest."""
        out: list[Arch] = []
        new: set[Arch] = set()
        for _ in range(self.knobs["sample_rounds"]):
            for arch in self.generator.sample(4 * self.knobs["samples"], gen).tolist():
                arch = as_arch(arch)
                if arch not in taken and arch not in new:
                    new.add(arch)
                    out.append(arch)
                    if len(out) == self.knobs["batch"]:
                        return out
        self.fallbacks += self.knobs["batch"] - len(out)
        return out + self.sample_unseen(self.knobs["batch"] - len(out), taken | new)

    def log_prob(self, archs: list[Arch]) -> np.ndarray:
        """The generator's log-probability of each arch (to watch it learn the top-k)."""
        with torch.no_grad():
            logp, _ = self.generator.log_prob(torch.tensor([list(a) for a in archs], dtype=torch.long))
        return logp.numpy()

    def _encode(self, archs: list[Arch]) -> torch.Tensor:
        for a in archs:
            if a not in self._codes:
                self._codes[a] = torch.as_tensor(np.asarray(self.space.encode(a), dtype=np.float32))
        return torch.stack([self._codes[a] for a in archs])

    # --- resumable state -------------------------------------------------------------------

    def _extra_state(self) -> dict:
        buf = io.BytesIO()
        torch.save(
            {
                "generator": self.generator.state_dict(),
                "disc": self.disc.state_dict(),
                "opt_gen": self.opt_gen.state_dict(),
                "opt_disc": self.opt_disc.state_dict(),
            },
            buf,
        )
        return {
            "torch": base64.b64encode(buf.getvalue()).decode("ascii"),
            "baseline": self.baseline,
            "pending": [list(a) for a in self.pending],
            "iterations": self.iterations,
            "fallbacks": self.fallbacks,
        }

    def _load_extra_state(self, d: dict) -> None:
        if not d:
            return
        nets = torch.load(io.BytesIO(base64.b64decode(d["torch"])), weights_only=True)
        self.generator.load_state_dict(nets["generator"])
        self.disc.load_state_dict(nets["disc"])
        self.opt_gen.load_state_dict(nets["opt_gen"])
        self.opt_disc.load_state_dict(nets["opt_disc"])
        self.baseline = d["baseline"]
        self.pending = [as_arch(a) for a in d["pending"]]
        self.iterations = int(d["iterations"])
        self.fallbacks = int(d["fallbacks"])
