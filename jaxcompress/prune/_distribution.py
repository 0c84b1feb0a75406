"""Per-layer sparsity distributions: uniform, Erdos-Renyi-Kernel (ERK), explicit per-path maps."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from jaxcompress.prune._schedule import check_sparsity

Distribution = str  # "uniform" | "erk"


def erk_sparsities(shapes: Sequence[tuple[int, ...]], sparsity: float) -> list[float]:
    """Erdos-Renyi-Kernel sparsities: density proportional to ``sum(shape) / prod(shape)``.

    Layers whose density would exceed 1 are kept dense and the rest rescaled, so that the
    total number of kept weights is ``(1 - sparsity) * sum(sizes)``.

    Args:
      shapes: leaf shapes (a Dense kernel ``(in, out)``, a conv kernel ``(h, w, in, out)``).
      sparsity: overall target in [0, 1).

    Returns:
      One sparsity per shape, in [0, 1).

    Example:
      >>> [round(s, 3) for s in erk_sparsities([(784, 512), (512, 512), (512, 10)], 0.9)]
      [0.914, 0.896, 0.0]

    References:
      Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners" (ERK);
      Mocanu et al. 2018 (Erdos-Renyi sparse layers).
    """
    sparsity = check_sparsity(sparsity)
    sizes = [math.prod(s) for s in shapes]
    raw = [sum(s) / n if n else 0.0 for s, n in zip(shapes, sizes, strict=True)]
    budget = (1.0 - sparsity) * sum(sizes)
    dense: set[int] = set()
    while True:
        free = [i for i in range(len(shapes)) if i not in dense and sizes[i]]
        rhs = budget - sum(sizes[i] for i in dense)
        divisor = sum(raw[i] * sizes[i] for i in free)
        eps = rhs / divisor if divisor > 0 else 0.0
        newly = {i for i in free if eps * raw[i] > 1.0}
        if not newly:
            break
        dense |= newly
    out = []
    for i, n in enumerate(sizes):
        density = 1.0 if (i in dense or not n) else min(1.0, eps * raw[i])
        out.append(min(max(1.0 - density, 0.0), math.nextafter(1.0, 0.0)))
    return out


def layer_sparsities(
    paths: Sequence[str],
    shapes: Sequence[tuple[int, ...]],
    sparsity: float | Mapping[str, float],
    distribution: Distribution,
    *,
    method: str,
) -> list[float]:
    """Final sparsity of each leaf for layer-wise pruning.

    Args:
      paths: '/'-joined leaf paths.
      shapes: their shapes (used by ERK).
      sparsity: the overall target, or an explicit map ``{regex: sparsity}`` (first full match
        wins, every leaf must match and every regex must match a leaf).
      distribution: ``"uniform"`` (every leaf at the target) or ``"erk"``.
      method: name used in error messages.

    Returns:
      One float per leaf.

    Raises:
      ValueError: for an unknown distribution, a bad sparsity, a leaf no regex matches or a
        regex that matches no leaf (the message lists the paths).
    """
    if isinstance(sparsity, Mapping):
        rules = []
        for rx, s in sparsity.items():
            if not isinstance(rx, str):
                raise ValueError(f"{method}: sparsity map keys must be path regexes, got {rx!r}")
            try:
                pat = re.compile(rx)
            except re.error as e:
                raise ValueError(
                    f"{method}: sparsity map regex {rx!r} does not compile: {e}"
                ) from None
            rules.append((rx, pat, check_sparsity(s, where=f"{method}: sparsity[{rx!r}]")))
        out, used = [], set()
        for p in paths:
            hit = next((r for r in rules if r[1].fullmatch(p)), None)
            if hit is None:
                raise ValueError(
                    f"{method}: leaf {p!r} matches no regex of the sparsity map "
                    f"{list(sparsity)}; the pruned paths are: {', '.join(paths)}"
                )
            used.add(hit[0])
            out.append(hit[2])
        for rx, _, _ in rules:
            if rx not in used:
                raise ValueError(
                    f"{method}: sparsity map regex {rx!r} matches no pruned leaf; the pruned "
                    f"paths are: {', '.join(paths)}"
                )
        return out
    s = check_sparsity(sparsity, where=f"{method}: sparsity")
    if distribution == "uniform":
        return [s] * len(paths)
    if distribution == "erk":
        return erk_sparsities(shapes, s)
    raise ValueError(f"{method}: distribution must be 'uniform' or 'erk', got {distribution!r}")
