"""Recipes: loading ``get_config()`` files, defaults, command-line overrides, validation.

A recipe is a Python file with ``get_config()`` returning an ``ml_collections.ConfigDict``. It is
merged onto :func:`defaults`, so a recipe states only what it changes, and a key the defaults do
not know is an error (a typo never passes silently), except inside the free-form sections
``data.kwargs``, ``model.kwargs``, ``baseline.model.kwargs``, ``train.optimizer_kwargs``,
``distill.kwargs`` and ``compress`` (whose keys other than ``rules`` are the recipe's named
hyper-parameters).

Overrides use the ml_collections form ``--config.train.steps=200``: the text is parsed to the
type of the value it replaces (int, float, bool, str, tuple ...); ``None`` clears a value.
Setting ``train.steps`` clears ``train.epochs`` and the other way round.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
import pathlib
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import ml_collections

from jaxcompress.cli._errors import UsageError, one_line

ConfigDict = ml_collections.ConfigDict

# Sections in which a recipe may add keys of its own.
FREE_FORM = (
    "data.kwargs",
    "model.kwargs",
    "baseline.model.kwargs",
    "train.optimizer_kwargs",
    "distill.kwargs",
    "compress",
)
SCHEDULES = ("constant", "cosine", "warmup_cosine", "linear")


def defaults() -> ConfigDict:
    """Every setting a recipe may use, with its default.

    Returns:
      A ConfigDict with the sections ``data``, ``model``, ``train``, ``eval``, ``baseline``,
      ``compress`` and ``output``.

    Example:
      >>> defaults().train.batch_size
      64
    """
    c = ConfigDict()
    c.data = ConfigDict()
    c.data.name = ""  # jc.workloads.load name: "digits", "mnist", "shakespeare"
    c.data.kwargs = ConfigDict()  # keyword arguments of the loader (seed, seq_len, max_chars)

    c.model = ConfigDict()
    c.model.name = ""  # a model class of jc.workloads: "MLP", "LeNet", "CharTransformer"
    c.model.kwargs = ConfigDict()  # its attributes; num_classes / vocab_size come from the data

    c.train = ConfigDict()
    c.train.steps = None  # optimizer steps per phase (set this or epochs)
    c.train.epochs = None  # or: passes over the training split (float)
    c.train.batch_size = 64  # examples per step
    c.train.optimizer = "adam"  # an optax optimizer, by name (adam, adamw, sgd, lion ...)
    c.train.optimizer_kwargs = ConfigDict()  # its further arguments (b1, weight_decay ...)
    c.train.lr = 1e-3  # peak learning rate
    c.train.schedule = "cosine"  # constant | cosine | warmup_cosine | linear (decay to 0)
    c.train.warmup_steps = 0  # linear warm-up steps (warmup_cosine)
    c.train.seed = 0  # parameter init and batch order
    c.train.log_every = 50  # steps between recorded training-loss points

    c.eval = ConfigDict()
    c.eval.batch_size = 500  # examples per evaluation batch
    c.eval.every = 100  # steps between validation points on the curves (0: none)
    c.eval.max_examples = None  # cap on evaluated examples per split (None: all)

    c.baseline = ConfigDict()
    c.baseline.enabled = True  # train a float model first (float accuracy, warm start)
    c.baseline.steps = None  # its steps (None: the same as the compressed phase)
    c.baseline.lr = None  # its peak learning rate (None: train.lr)
    c.baseline.warm_start = True  # start compressed training from the float weights
    c.baseline.model = ConfigDict()  # a different (e.g. bigger teacher) model for the baseline
    c.baseline.model.name = ""  # its jc.workloads class ("": the same model as `model`)
    c.baseline.model.kwargs = ConfigDict()  # its attributes

    c.distill = ConfigDict()
    c.distill.loss = ""  # a loss (student_logits, teacher_logits) by name, e.g. distill.kd_loss
    c.distill.kwargs = ConfigDict()  # its keyword arguments (temperature ...)
    c.distill.weight = 0.5  # loss = (1 - weight) * cross-entropy + weight * distillation loss

    c.compress = ConfigDict()
    c.compress.rules = []  # ordered [(regex, method spec), ...] built with jc.rules

    c.output = ConfigDict()
    c.output.dir = ""  # run folder ("" : runs/<recipe name>); --out overrides
    c.output.checkpoint_every = 1000  # steps between checkpoints (0: only at the end / Ctrl-C)
    c.output.max_to_keep = 2  # checkpoints kept per phase
    c.output.plots = True  # write the PNG plots
    return c


# ---------------------------------------------------------------------------------------
# Keys.


def leaf_keys(cfg: ConfigDict, prefix: str = "") -> list[str]:
    """Dotted keys of every leaf setting (sections themselves are not listed).

    Example:
      >>> "train.steps" in leaf_keys(defaults())
      True
    """
    keys = []
    for k in sorted(cfg.keys()):
        v = cfg[k]
        full = f"{prefix}{k}"
        if isinstance(v, ConfigDict):
            sub = leaf_keys(v, full + ".")
            keys += sub if sub else [full]
        else:
            keys.append(full)
    return keys


def _unknown(key: str, cfg: ConfigDict) -> UsageError:
    valid = leaf_keys(cfg)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UsageError(f"unknown config key {key!r}{hint}; valid keys: {', '.join(valid)}")


def _parent(cfg: ConfigDict, key: str) -> tuple[ConfigDict, str]:
    parts = key.split(".")
    node = cfg
    for p in parts[:-1]:
        if p not in node or not isinstance(node[p], ConfigDict):
            raise _unknown(key, cfg)
        node = node[p]
    if parts[-1] not in node:
        raise _unknown(key, cfg)
    return node, parts[-1]


def get(cfg: ConfigDict, key: str) -> Any:
    """The value at a dotted key.

    Raises:
      UsageError: for an unknown key (lists the valid ones).
    """
    node, last = _parent(cfg, key)
    return node[last]


# ---------------------------------------------------------------------------------------
# Values from text.


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def coerce(key: str, current: Any, text: str) -> Any:
    """Parses command-line ``text`` to the type of the ``current`` value at ``key``.

    Args:
      key: the dotted key (for messages).
      current: the value being replaced (its type decides the parsing).
      text: the text from the command line.

    Returns:
      The parsed value; ``None`` for the text ``None``.

    Raises:
      UsageError: if the text does not parse as that type, or ``key`` is a section.

    Example:
      >>> coerce("train.steps", 100, "30"), coerce("model.kwargs.features", (1,), "64,10")
      (30, (64, 10))
    """
    where = f"--config.{key}={text}"
    stripped = text.strip()
    if isinstance(current, ConfigDict):
        raise UsageError(
            f"{where}: {key!r} is a section; set one of its keys: "
            + ", ".join(f"{key}.{k}" for k in leaf_keys(current))
        )
    if stripped == "None":
        return None
    if isinstance(current, bool):
        low = stripped.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise UsageError(f"{where}: expected true or false")
    if isinstance(current, int):
        v = _literal(stripped)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise UsageError(f"{where}: expected an integer")
        return v
    if isinstance(current, float):
        v = _literal(stripped)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise UsageError(f"{where}: expected a number")
        return float(v)
    if isinstance(current, str):
        v = _literal(stripped)
        return v if isinstance(v, str) else stripped
    if isinstance(current, (tuple, list)):
        v = _literal(stripped)
        if not isinstance(v, (tuple, list)):
            v = (v,) if not isinstance(v, str) or stripped else ()
        return type(current)(v)
    if isinstance(current, dict):
        v = _literal(stripped)
        if not isinstance(v, dict):
            raise UsageError(f"{where}: expected a dict literal such as {{'a': 1}}")
        return v
    return _literal(stripped)


def split_values(text: str) -> list[str]:
    """Splits ``v1,v2,...`` at top-level commas (not inside brackets or quotes).

    Example:
      >>> split_values("2,4,8"), split_values("(64,10),(32,10)")
      (['2', '4', '8'], ['(64,10)', '(32,10)'])
    """
    out, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return [v for v in out if v]


def set_value(cfg: ConfigDict, key: str, value: Any) -> None:
    """Sets a dotted key (which must exist) to an already parsed value.

    Setting ``train.steps`` to a value clears ``train.epochs`` and the other way round.

    Raises:
      UsageError: for an unknown key.
    """
    node, last = _parent(cfg, key)
    with cfg.unlocked():
        # ConfigDict keeps the type of a field's first value; replace the field so the parsed
        # type wins (e.g. None -> int, int -> float).
        del node[last]
        node[last] = value
        if value is not None and key in ("train.steps", "train.epochs"):
            other = "epochs" if last == "steps" else "steps"
            del cfg.train[other]
            cfg.train[other] = None


def override(cfg: ConfigDict, key: str, text: str) -> Any:
    """Applies one ``--config.KEY=TEXT`` override; returns the parsed value.

    Raises:
      UsageError: for an unknown key (the message lists the valid keys) or a value of the
        wrong type.

    Example:
      >>> cfg = defaults()
      >>> override(cfg, "train.batch_size", "32"), cfg.train.batch_size
      (32, 32)
    """
    value = coerce(key, get(cfg, key), text)
    set_value(cfg, key, value)
    return value


def parse_override_args(args: Sequence[str]) -> list[tuple[str, str]]:
    """Turns ``["--config.a.b=1", "--config.c", "2"]`` into ``[("a.b", "1"), ("c", "2")]``.

    Raises:
      UsageError: for an argument that is not a ``--config.KEY=VALUE`` override.
    """
    out, i = [], 0
    args = list(args)
    while i < len(args):
        a = args[i]
        if not a.startswith("--config."):
            raise UsageError(
                f"unrecognized argument {a!r}; config overrides look like --config.train.steps=200"
            )
        body = a[len("--config.") :]
        if "=" in body:
            key, text = body.split("=", 1)
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            key, text = body, args[i + 1]
            i += 1
        else:
            raise UsageError(f"{a}: missing value; write {a}=VALUE")
        if not key:
            raise UsageError(f"{a}: missing key")
        out.append((key, text))
        i += 1
    return out


# ---------------------------------------------------------------------------------------
# Loading and merging.


def _merge(base: ConfigDict, recipe: Any, prefix: str, path: str) -> None:
    items = recipe.items() if hasattr(recipe, "items") else None
    if items is None:
        raise UsageError(f"config {path}: {prefix.rstrip('.') or 'the config'} must be a section")
    for k, v in items:
        full = f"{prefix}{k}"
        free = any(full.startswith(f + ".") for f in FREE_FORM)
        if k not in base:
            if not free:
                valid = leaf_keys(defaults())
                close = difflib.get_close_matches(full, valid, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UsageError(
                    f"config {path}: unknown key {full!r}{hint}; valid keys: {', '.join(valid)}"
                )
            with base.unlocked():
                base[k] = v
            continue
        if isinstance(base[k], ConfigDict):
            if not hasattr(v, "items"):
                raise UsageError(f"config {path}: {full!r} must be a section, got {v!r}")
            _merge(base[k], v, full + ".", path)
        else:
            with base.unlocked():
                del base[k]
                base[k] = v


def load(path: str) -> ConfigDict:
    """Loads a recipe file, calls its ``get_config()`` and merges it onto :func:`defaults`.

    Args:
      path: a ``.py`` file defining ``get_config()``.

    Returns:
      The merged ConfigDict; ``output.dir`` defaults to ``runs/<file stem>``.

    Raises:
      UsageError: if the file is missing, does not parse, fails, has no ``get_config``, or
        returns something other than a ConfigDict, or uses a key the defaults do not know.

    Example:
      >>> cfg = load("configs/quickstart.py")  # doctest: +SKIP
      >>> override(cfg, "compress.bits", "4")  # doctest: +SKIP
      4
    """
    p = pathlib.Path(path)
    if not p.exists():
        raise UsageError(f"config file {path} not found")
    if not p.is_file():
        raise UsageError(f"config {path} is not a file")
    try:
        source = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read config {path}: {e}") from None
    try:
        compile(source, str(p), "exec")
    except SyntaxError as e:
        raise UsageError(f"config {path} is malformed: line {e.lineno}: {e.msg}") from None
    name = f"_jaxcompress_recipe_{p.stem}"
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        get_config = getattr(module, "get_config", None)
        if not callable(get_config):
            raise UsageError(f"config {path} is malformed: it defines no get_config() function")
        recipe = get_config()
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of user code is reported in one line
        raise UsageError(
            f"config {path} is malformed: get_config failed: {type(e).__name__}: {one_line(e)}"
        ) from None
    finally:
        sys.modules.pop(name, None)
    if isinstance(recipe, dict):
        recipe = ConfigDict(recipe)
    if not isinstance(recipe, ConfigDict):
        raise UsageError(
            f"config {path} is malformed: get_config() returned {type(recipe).__name__}, "
            "not an ml_collections.ConfigDict"
        )
    cfg = defaults()
    _merge(cfg, recipe, "", path)
    if not cfg.output.dir:
        cfg.output.dir = os.path.join("runs", p.stem)
    return cfg


# ---------------------------------------------------------------------------------------
# Validation and serialization.


def _int(cfg: ConfigDict, key: str, lo: int, *, none: bool = False) -> None:
    v = get(cfg, key)
    if v is None and none:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise UsageError(f"config {key} must be an integer >= {lo}, got {v!r}")


def validate(cfg: ConfigDict) -> None:
    """Checks every setting's type and range; raises a one-line UsageError naming the key.

    Raises:
      UsageError: for a missing data set or model name, neither/both of steps and epochs, or
        a value out of range.
    """
    for key in ("data.name", "model.name"):
        v = get(cfg, key)
        if not isinstance(v, str) or not v:
            raise UsageError(f"config {key} must name a {key.split('.')[0]}, got {v!r}")
    steps, epochs = cfg.train.steps, cfg.train.epochs
    if (steps is None) == (epochs is None):
        raise UsageError(
            f"config must set exactly one of train.steps and train.epochs, got steps={steps!r}, "
            f"epochs={epochs!r}"
        )
    if steps is not None:
        _int(cfg, "train.steps", 1)
    elif isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs <= 0:
        raise UsageError(f"config train.epochs must be a number > 0, got {epochs!r}")
    _int(cfg, "train.batch_size", 1)
    _int(cfg, "train.warmup_steps", 0)
    _int(cfg, "train.seed", 0)
    _int(cfg, "train.log_every", 1)
    lr = cfg.train.lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise UsageError(f"config train.lr must be a number > 0, got {lr!r}")
    if cfg.train.schedule not in SCHEDULES:
        raise UsageError(
            f"config train.schedule must be one of {', '.join(SCHEDULES)}, got "
            f"{cfg.train.schedule!r}"
        )
    if not isinstance(cfg.train.optimizer, str) or not cfg.train.optimizer:
        raise UsageError(
            f"config train.optimizer must name an optax optimizer, got {cfg.train.optimizer!r}"
        )
    _int(cfg, "eval.batch_size", 1)
    _int(cfg, "eval.every", 0)
    _int(cfg, "eval.max_examples", 1, none=True)
    _int(cfg, "baseline.steps", 1, none=True)
    blr = cfg.baseline.lr
    if blr is not None and (isinstance(blr, bool) or not isinstance(blr, (int, float)) or blr <= 0):
        raise UsageError(f"config baseline.lr must be a number > 0 or None, got {blr!r}")
    for key in ("baseline.enabled", "baseline.warm_start", "output.plots"):
        if not isinstance(get(cfg, key), bool):
            raise UsageError(f"config {key} must be true or false, got {get(cfg, key)!r}")
    if not isinstance(cfg.distill.loss, str):
        raise UsageError(f"config distill.loss must name a loss or be '', got {cfg.distill.loss!r}")
    w = cfg.distill.weight
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w <= 1:
        raise UsageError(f"config distill.weight must be a number in [0, 1], got {w!r}")
    bname = cfg.baseline.model.name
    if not isinstance(bname, str):
        raise UsageError(f"config baseline.model.name must name a model or be '', got {bname!r}")
    if (bname or cfg.baseline.model.kwargs.keys()) and not cfg.baseline.enabled:
        raise UsageError("config baseline.model is set but baseline.enabled=False")
    if (bname or cfg.baseline.model.kwargs.keys()) and cfg.baseline.warm_start:
        raise UsageError(
            "config baseline.model is another model than model, so its weights cannot start "
            "the compressed phase: set baseline.warm_start=False"
        )
    if cfg.distill.loss and not cfg.baseline.enabled:
        raise UsageError(
            "config distill.loss needs baseline.enabled=True: the float baseline is the teacher"
        )
    _int(cfg, "output.checkpoint_every", 0)
    _int(cfg, "output.max_to_keep", 1)
    if not isinstance(cfg.compress.rules, (list, tuple)):
        raise UsageError(
            f"config compress.rules must be a list of (regex, spec) pairs, got "
            f"{cfg.compress.rules!r}"
        )


def hparams(cfg: ConfigDict) -> dict[str, Any]:
    """The named hyper-parameters: every key of ``config.compress`` other than ``rules``."""
    return {k: cfg.compress[k] for k in cfg.compress.keys() if k != "rules"}


def to_plain(cfg: ConfigDict) -> dict[str, Any]:
    """A JSON-compatible dict of the config (tuples become lists)."""
    return json.loads(cfg.to_json())


def diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain configs."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        full = f"{prefix}{k}"
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff(va, vb, full + ".")
        elif va != vb:
            out.append(full)
    return out


def keys_matching(cfg: ConfigDict, keys: Iterable[str]) -> None:
    """Raises the unknown-key UsageError for the first key that is not in ``cfg``."""
    for k in keys:
        get(cfg, k)
