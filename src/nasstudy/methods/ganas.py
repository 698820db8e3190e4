"""GA-NAS: generative adversarial NAS (Rezaei et al., IJCAI 2021), as docs/design.md#ga-nas describes it.

No code was released. The loop follows the paper: query a random initial set; each iteration take
the top-k of everything queried as the "truth" set; train a pairwise discriminator on (truth arch,
arch generated from it) pairs, train the generator, conditioned on a truth arch, by PPO with the
discriminator's output as reward; then sample a batch of new archs from the generator conditioned
on truth archs and query the unseen ones. The networks are small substitutes (see `GANAS`).
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import torch
from torch import nn

from nasstudy.methods.base import Arch, SearchMethod, Space, as_arch

POLICIES = ("ppo", "reinforce")


class Generator(nn.Module):
    """x' ~ G(. | x): an encoder (an MLP over `space.encode(x)` of a truth arch x) gives the
    initial state of an autoregressive GRU decoder over the space's decisions. The decoder reads
    the previous choice (one token per (decision, option), so the token also says where it is)
    and one linear head scores the options of the next decision. Space-agnostic: only
    `decision_sizes` and the encoding's width shape it."""

    def __init__(self, sizes: list[int], width: int, hidden: int) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.offsets = [int(x) for x in np.cumsum([0, *self.sizes[:-1]])]
        n_tokens = sum(self.sizes)
        self.encoder = nn.Sequential(nn.Linear(width, hidden), nn.Tanh())
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

    def _h0(self, cond: torch.Tensor) -> torch.Tensor:
        return self.encoder(cond).unsqueeze(0)  # (1, batch, hidden): the GRU's initial state

    def log_prob(self, cond: torch.Tensor, archs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-arch log p(arch | cond) and entropy, for (batch, width) encoded truth archs `cond`
        and a (batch, decisions) tensor of choices; all steps in one GRU call (teacher forcing)."""
        tokens = archs + self.offset_t  # global token of each choice
        start = torch.full((archs.shape[0], 1), self.start, dtype=torch.long)
        inputs = torch.cat([start, tokens[:, :-1]], dim=1)
        out, _ = self.gru(self.embed(inputs), self._h0(cond))
        logp = torch.log_softmax(self.head(out) + self.mask, dim=-1)  # each step over its own options
        picked = logp.gather(2, tokens.unsqueeze(2)).squeeze(2).sum(1)
        p = logp.exp()
        entropy = -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum((1, 2))
        return picked, entropy

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """One arch per row of `cond` (encoded truth archs), as a (batch, decisions) tensor."""
        n = cond.shape[0]
        token = torch.full((n, 1), self.start, dtype=torch.long)
        h = self._h0(cond)
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


class Discriminator(nn.Module):
    """Pairwise, relativistic Siamese discriminator: one MLP critic C scores both archs of a pair
    and D(x_true, x') = sigmoid(C(x_true) - C(x')), the probability that the truth arch is the
    more "real" of the two. `forward` returns the logit C(x_true) - C(x')."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.critic = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1),
        )  # fmt: skip

    def forward(self, truth: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return (self.critic(truth) - self.critic(other))[:, 0]

    def loss(self, truth: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """-log D(x_true, x_gen) over the pairs (relativistic GAN loss): lower when truth wins."""
        return nn.functional.softplus(-self(truth, generated)).mean()


class GANAS(SearchMethod):
    """GA-NAS over any space with the generic API.

    As the paper: the discriminator is pairwise and relativistic (`Discriminator`, trained on
    (truth arch x, x' ~ G(.|x)) pairs); the generator is conditioned on a truth arch (`Generator`);
    the generator is trained by PPO (`policy: ppo`, clipped ratio `ppo_clip`, `ppo_epochs` passes
    over each sample batch against the policy that sampled it) with reward
    sigmoid(C(x') - C(x)), the discriminator's probability that x' beats its truth arch, less a
    baseline per truth arch (`advantage`). `policy: reinforce` takes one plain policy-gradient step instead.
    Substitutes: MLPs over `space.encode(arch)` where the paper has GNNs (the encoder and the
    critic), so the method needs no graph view of a space.

    Knobs. From the paper's loop: `initial` (random archs first), `top_k` (the truth set), `batch`
    (new archs queried per iteration), `disc_steps`, `gen_steps`. Ours (the paper's values could
    not be read here; chosen small so 1,000 table queries take seconds on one CPU core):
    `samples` (pairs per training step), `hidden` (encoder, GRU, embedding and critic width),
    `lr_gen`, `lr_disc` (Adam), `entropy` (bonus weight against collapse; PPO's unclipped entropy
    term outweighs the clipped surrogate at 0.1, so the search turns near-uniform),
    `policy`, `ppo_clip`, `ppo_epochs`, `sample_rounds` (generator batches of `4 * samples` tried
    to find `batch` unseen archs; then uniform unseen samples fill the rest).

    Between `ask`s the networks, Adam states and the not-yet-asked samples of the
    last iteration are saved as extra state; torch's randomness comes from a generator seeded from
    the method's numpy rng, so a resumed run continues exactly. Call with torch single-threaded
    (`seed_torch(..., threads=1)`) for bit-identical runs across machines; it is faster here too.
    """

    name = "ganas"

    def __init__(
        self,
        space: Space,
        rng: np.random.Generator,
        initial: int = 10,
        top_k: int = 5,
        batch: int = 10,
        disc_steps: int = 5,
        gen_steps: int = 5,
        samples: int = 32,
        hidden: int = 32,
        lr_gen: float = 0.01,
        lr_disc: float = 0.01,
        entropy: float = 0.02,
        policy: str = "ppo",
        ppo_clip: float = 0.2,
        ppo_epochs: int = 4,
        sample_rounds: int = 20,
    ) -> None:
        super().__init__(space, rng)
        ints = {"initial": initial, "top_k": top_k, "batch": batch, "samples": samples, "hidden": hidden}
        ints |= {"ppo_epochs": ppo_epochs, "sample_rounds": sample_rounds}
        for key, value in ints.items():
            if int(value) < 1:
                raise ValueError(f"ganas needs {key} >= 1, got {value}")
        if disc_steps < 0 or gen_steps < 0 or lr_gen <= 0 or lr_disc <= 0 or entropy < 0 or ppo_clip <= 0:
            raise ValueError("ganas needs disc_steps, gen_steps, entropy >= 0 and lr_gen, lr_disc, ppo_clip > 0")
        if policy not in POLICIES:
            raise ValueError(f"ganas policy {policy!r} is not allowed; allowed: {', '.join(POLICIES)}")
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
            "entropy": float(entropy),
            "policy": policy,
            "ppo_clip": float(ppo_clip),
            "ppo_epochs": int(ppo_epochs),
            "sample_rounds": int(sample_rounds),
        }
        k = self.knobs
        width = len(space.encode(tuple(0 for _ in space.decision_sizes)))
        # build under a private torch seed so the global torch rng is neither used nor moved
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**63)))
            self.generator = Generator(space.decision_sizes, width, k["hidden"])
            self.disc = Discriminator(width, k["hidden"])
        self.opt_gen = torch.optim.Adam(self.generator.parameters(), lr=k["lr_gen"])
        self.opt_disc = torch.optim.Adam(self.disc.parameters(), lr=k["lr_disc"])
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
        """The top-`top_k` archs told so far by acc (the earliest first on ties): the truth set."""
        order = sorted(range(len(self.history)), key=lambda i: (-self.history[i][1]["acc"], i))
        return [self.history[i][0] for i in order[: self.knobs["top_k"]]]

    def iteration(self, taken: set[Arch]) -> None:
        """One GA-NAS iteration: train D then G against the current truth set, then fill
        `pending` with `batch` new archs from G (none in `taken`)."""
        gen = torch.Generator().manual_seed(int(self.rng.integers(2**63)))
        truth = self._encode(self.top())
        for _ in range(self.knobs["disc_steps"]):
            cond, fake = self._pairs(truth, self.knobs["samples"], gen)
            self._step(self.opt_disc, self.disc.loss(cond, self._encode(self._archs(fake))))
        for _ in range(self.knobs["gen_steps"]):
            self._gen_step(truth, gen)
        self.pending = self._new_archs(truth, taken, gen)
        self.iterations += 1

    def _pairs(self, truth: torch.Tensor, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` truth archs drawn uniformly (encoded) and one generator sample conditioned on each."""
        cond = truth[torch.randint(truth.shape[0], (n,), generator=gen)]
        return cond, self.generator.sample(cond, gen)

    def _gen_step(self, truth: torch.Tensor, gen: torch.Generator) -> None:
        cond, archs = self._pairs(truth, self.knobs["samples"], gen)
        self.policy_update(cond, archs, self.advantage(cond, archs))

    @torch.no_grad()
    def advantage(self, cond: torch.Tensor, archs: torch.Tensor) -> torch.Tensor:
        """Reward of x'_i ~ G(.|x_i): D's probability sigmoid(C(x'_i) - C(x_i)) that it beats its
        truth arch, less the same for the batch's other samples against x_i (a baseline per truth
        arch: a strong x_i makes every reward small, and that is no fault of x'_i)."""
        c_truth = self.disc.critic(cond)  # (n, 1)
        c_gen = self.disc.critic(self._encode(self._archs(archs)))[:, 0]  # (n,)
        pairwise = torch.sigmoid(c_gen.unsqueeze(0) - c_truth)  # [i, j]: x'_j against x_i
        return pairwise.diagonal() - pairwise.mean(1)

    def policy_update(self, cond: torch.Tensor, archs: torch.Tensor, advantage: torch.Tensor) -> list[torch.Tensor]:
        """Update G on sampled (cond, arch) pairs with their advantages: PPO's clipped surrogate
        for `ppo_epochs` Adam steps against the sampling policy's log-probabilities, or one
        REINFORCE step. Returns the probability ratio new/old of each pair before every step."""
        ent_w = self.knobs["entropy"]
        if self.knobs["policy"] == "reinforce":
            logp, ent = self.generator.log_prob(cond, archs)
            self._step(self.opt_gen, -(advantage * logp).mean() - ent_w * ent.mean())
            return [torch.ones_like(logp)]
        clip = self.knobs["ppo_clip"]
        with torch.no_grad():
            old, _ = self.generator.log_prob(cond, archs)
        ratios = []
        for _ in range(self.knobs["ppo_epochs"]):
            logp, ent = self.generator.log_prob(cond, archs)
            ratio = torch.exp(logp - old)
            surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage)
            self._step(self.opt_gen, -surrogate.mean() - ent_w * ent.mean())
            ratios.append(ratio.detach())
        return ratios

    @staticmethod
    def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad()
        loss.backward()
        opt.step()

    def _new_archs(self, truth: torch.Tensor, taken: set[Arch], gen: torch.Generator) -> list[Arch]:
        """`batch` distinct archs sampled from G (each conditioned on a random truth arch) and not
        in `taken`; if G keeps repeating known archs, uniform unseen samples fill the rest."""
        out: list[Arch] = []
        new: set[Arch] = set()
        for _ in range(self.knobs["sample_rounds"]):
            for arch in self._archs(self._pairs(truth, 4 * self.knobs["samples"], gen)[1]):
                if arch not in taken and arch not in new:
                    new.add(arch)
                    out.append(arch)
                    if len(out) == self.knobs["batch"]:
                        return out
        self.fallbacks += self.knobs["batch"] - len(out)
        return out + self.sample_unseen(self.knobs["batch"] - len(out), taken | new)

    def log_prob(self, archs: list[Arch], cond: list[Arch]) -> np.ndarray:
        """log p(archs[i] | cond[i]) under the generator (to watch it learn the truth set)."""
        with torch.no_grad():
            logp, _ = self.generator.log_prob(self._encode(cond), self._tensor(archs))
        return logp.numpy()

    @staticmethod
    def _archs(t: torch.Tensor) -> list[Arch]:
        return [as_arch(a) for a in t.tolist()]

    @staticmethod
    def _tensor(archs: list[Arch]) -> torch.Tensor:
        return torch.tensor([list(a) for a in archs], dtype=torch.long)

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
        self.pending = [as_arch(a) for a in d["pending"]]
        self.iterations = int(d["iterations"])
        self.fallbacks = int(d["fallbacks"])
