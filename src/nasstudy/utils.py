"""Small helpers every stage shares: atomic JSON/CSV writes, seeds derived from the study seed, threads."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON with sorted keys and a trailing newline, atomically (byte-identical across runs)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    atomic_write_bytes(path, text.encode())


class CorruptFile(ValueError):
    """A file that exists but cannot be read: truncated, edited by hand, or not what its name says."""


def corrupt(path: str | Path, what: str, err: BaseException) -> CorruptFile:
    """The one-line error for an unreadable `path`, with what to do about it."""
    detail = " ".join(str(err).split()).split(". ")[0][:160] or type(err).__name__  # its first sentence
    return CorruptFile(f"{path} is not {what} ({detail}); delete it and run again to rebuild it")


def read_json(path: str | Path) -> Any:
    """JSON from `path`; a truncated or malformed file is a CorruptFile naming it."""
    with open(path) as f:
        try:
            return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise corrupt(path, "valid JSON", e) from None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def derive_seed(seed: int, *names: object) -> int:
    """A 63-bit seed from the study seed and names (stage, wildcards): independent streams, no clashes."""
    text = "/".join([str(seed), *map(str, names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def replicate_names(wildcards: dict[str, str]) -> tuple[object, ...]:
    """The seed names a replicate adds: none for replicate 0 (a one-replicate study draws exactly the
    seeds it drew before replicates existed), ("rep", r) for replicate r > 0."""
    rep = int(wildcards.get("rep", 0))
    if rep < 0:
        raise ValueError(f"replicate {rep} is negative")
    return ("rep", rep) if rep else ()


def make_rng(seed: int, *names: object) -> np.random.Generator:
    """A numpy Generator seeded from the study seed and names."""
    return np.random.default_rng(derive_seed(seed, *names))


def seed_torch(seed: int, *names: object, threads: int = 1) -> int:
    """Seed torch from the study seed and names, fix its thread count, and ask for deterministic kernels
    (bit-exact on CPU; on CUDA, cuBLAS needs the workspace setting below, and the few ops without a
    deterministic kernel warn instead of failing: see docs/resume-and-reproducibility.md)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when CUDA initialises
    import torch

    s = derive_seed(seed, *names)
    torch.manual_seed(s)
    torch.set_num_threads(max(1, int(threads)))
    set_deterministic(True)
    return s


def set_deterministic(on: bool, warn_only: bool = True) -> None:
    """torch.use_deterministic_algorithms(on, warn_only=...), set without that function's import of
    torch._inductor (1.5 s per job here; the study never compiles)."""
    import torch

    set_flag = getattr(torch._C, "_set_deterministic_algorithms", None)
    if set_flag is None:
        torch.use_deterministic_algorithms(on, warn_only=warn_only)
    else:
        set_flag(on, warn_only=warn_only)


def config_from_params(cls: type[T], params: dict, section: str) -> T:
    """Dataclass `cls` built from a params section; an unknown key is an error naming it and the
    allowed ones (never silently ignored)."""
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"unknown {section} key(s) {unknown}; allowed: {known}")
    return cls(**params)


def resolve(registry: dict[str, str], name: str, what: str) -> Any:
    """What `registry[name]` names ("module:attr"), imported only now, so that a job pays for the
    imports of the one entry it runs; an unknown name raises ValueError naming it and the allowed ones."""
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; allowed: {', '.join(sorted(registry))}")
    module, attr = registry[name].split(":")
    return getattr(importlib.import_module(module), attr)


def save_png(fig: Any, path: str | Path, dpi: float | None = None) -> None:
    """A matplotlib figure as PNG without the software/version stamp, written atomically: reruns give
    identical bytes. `dpi` None keeps the figure's own."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())


def file_md5(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
