"""One argument vocabulary (docs/index.md, "Conventions"), enforced on every public signature.

Enumerates the public callables of every public fokker module (functions, classes, their
public methods) with ``inspect.signature`` and checks:

* counts are ``num_*``: no parameter named ``n``, ``n_<x>`` or ``<x>_n``;
* ``steps`` only for optimisation iterations (``fit`` and training methods);
* every ``sample`` / ``rsample`` / ``sample_and_log_prob`` method takes ``sample_shape`` first;
* ``seed=`` only next to ``generator=`` (a convenience that builds one), except seeds that define
  an object (a target's random parameters);
* ``progress=`` defaults to ``None`` everywhere;
* ``log_Z`` is a property (closed form) or an estimator returning ``LogZEstimate``;
* public classes cite a paper (a year in the docstring) unless they are plumbing, and a
  pointer to the lecture notes ("seed 00x") only appears beside a paper citation.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable, Iterator

import fokker

#: Callables whose ``steps`` is a number of optimisation iterations.
OPTIMISATION = re.compile(r"(^|\.)(fit|fit_to_target|train|FitResult\.__init__|classifier_two_sample_test)$")
#: Seeds that define an object rather than a sampling stream.
DEFINING_SEEDS = {
    "fokker.targets.mixture.mog40",
    "fokker.targets.mixture.GaussianMixture.mog40",
    "fokker.datasets.toy.ToyDataset.__init__",  # records the seed the points were drawn with
    "fokker.train.data.BatchSource.__init__",  # fit's internal batch order, seeded from fit's generator
}
#: Modules not part of the library API (the validation registry and the command line).
SKIP_MODULES = ("fokker.validate", "fokker.cli")
#: Public classes that implement no published method (plumbing, results, errors, protocols).
PLUMBING = re.compile(
    r"(Result|Outcome|Estimate|Error|Warning|Config|State|StepInfo|Info|Protocol|Schedule|Coefficients|Tolerance"
    r"|Terms|Context|Check|Source|Dataset|Buffer|Metric|Embedding|Net|MLP|Bijection|Transform|Flow$|Target$"
    r"|Objective|Kernel$|Sampler$|Model$|Normal$|Plan|Mask|Permute|Reverse|Squeeze|Slice|Abs|Sort|Max|ConvNet|LipSwish"
    r"|Additive|Affine$|ElementwiseMap|Surjection|Augment|Conditional|Dequantization|Spline|MADE|MaskedLinear"
    r"|MaskedAutoregressive|Callable|Annealed|Univariate|Wrapper|Phase|Piecewise|TimeSampler|SDE$|ODE$|Reverse"
    r"|Fraction$|Test$|KL$|Guard$|Randomness$|Stopping$|^Adaptation$)"
)


def _public_modules() -> Iterator[object]:
    for info in pkgutil.walk_packages(fokker.__path__, "fokker."):
        name = info.name
        if any(p.startswith("_") for p in name.split(".")[1:]) or name.startswith(SKIP_MODULES):
            continue
        yield importlib.import_module(name)


def _callables() -> Iterator[tuple[str, Callable, object]]:
    """(qualified name, callable, owner class or None) of every public callable defined in fokker."""
    seen: set[int] = set()
    for mod in _public_modules():
        for attr, obj in vars(mod).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != mod.__name__ or id(obj) in seen:
                continue
            seen.add(id(obj))
            q = f"{mod.__name__}.{attr}"
            if inspect.isclass(obj):
                yield f"{q}.__init__", obj.__init__, obj
                for k, v in vars(obj).items():
                    if k.startswith("_"):
                        continue
                    if isinstance(v, (staticmethod, classmethod)):
                        v = v.__func__
                    if inspect.isfunction(v):
                        yield f"{q}.{k}", v, obj
            elif inspect.isfunction(obj):
                yield q, obj, None


def _params(fn: Callable) -> list[inspect.Parameter]:
    try:
        return [p for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "cls")]
    except (TypeError, ValueError):
        return []


ALL = list(_callables())


def test_enumeration_sees_the_api() -> None:
    names = {q for q, _, _ in ALL}
    for expected in ("fokker.train.loop.fit", "fokker.mcmc.sample.sample", "fokker.flows.flow.Flow.sample"):
        assert expected in names
    assert len(ALL) > 300


def test_counts_are_num_star() -> None:
    bad = [
        f"{q}({p.name})"
        for q, fn, _ in ALL
        for p in _params(fn)
        if p.name == "n" or re.fullmatch(r"n_\w+|\w+_n", p.name)
    ]
    assert not bad, "counts must be named num_*: " + ", ".join(bad)


def test_steps_means_optimisation_iterations() -> None:
    bad = [q for q, fn, _ in ALL if any(p.name == "steps" for p in _params(fn)) and not OPTIMISATION.search(q)]
    assert not bad, "`steps` outside optimisation (use num_steps for discretisation): " + ", ".join(bad)


def test_sample_takes_sample_shape_first() -> None:
    bad = []
    for q, fn, owner in ALL:
        if owner is None or q.rsplit(".", 1)[1] not in ("sample", "rsample", "sample_and_log_prob"):
            continue
        ps = _params(fn)
        if not ps or ps[0].name != "sample_shape":
            bad.append(f"{q}({', '.join(p.name for p in ps)})")
    assert not bad, "sample methods must take sample_shape first: " + "; ".join(bad)


def test_seed_only_beside_generator() -> None:
    bad = []
    for q, fn, _ in ALL:
        names = {p.name for p in _params(fn)}
        if "seed" in names and "generator" not in names and q not in DEFINING_SEEDS:
            bad.append(q)
    assert not bad, "seed= must be a convenience next to generator=: " + ", ".join(bad)


def test_progress_defaults_to_none() -> None:
    bad = [q for q, fn, _ in ALL for p in _params(fn) if p.name == "progress" and p.default is not None]
    assert not bad, "progress= must default to None (a bar on terminals only): " + ", ".join(bad)


def test_log_Z_is_a_property_or_an_estimate() -> None:
    bad = []
    for mod in _public_modules():
        for attr, cls in vars(mod).items():
            if not inspect.isclass(cls) or getattr(cls, "__module__", None) != mod.__name__:
                continue
            member = inspect.getattr_static(cls, "log_Z", None)
            if member is None or isinstance(member, property):
                continue
            fn = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
            ret = inspect.signature(fn).return_annotation if callable(fn) else None
            if "LogZEstimate" not in str(ret):
                bad.append(f"{mod.__name__}.{attr}.log_Z -> {ret}")
    assert not bad, "log_Z must be a property or return LogZEstimate: " + ", ".join(bad)


def _classes() -> Iterator[tuple[str, type]]:
    for mod in _public_modules():
        for attr, cls in vars(mod).items():
            if inspect.isclass(cls) and not attr.startswith("_") and getattr(cls, "__module__", None) == mod.__name__:
                yield f"{mod.__name__}.{attr}", cls


def test_public_classes_cite_their_paper() -> None:
    year = re.compile(r"\b(19|20)\d\d\b")
    bad = [
        q
        for q, cls in _classes()
        if not PLUMBING.search(cls.__name__) and not year.search(inspect.getdoc(cls) or "")
    ]
    assert not bad, "public classes must cite their paper (authors, year): " + ", ".join(sorted(bad))


def test_lecture_note_pointers_sit_beside_a_citation() -> None:
    year = re.compile(r"\b(19|20)\d\d\b")
    bad = []
    for mod in _public_modules():
        docs = [(mod.__name__, mod.__doc__)]
        for attr, obj in vars(mod).items():
            if getattr(obj, "__module__", None) == mod.__name__ and (inspect.isclass(obj) or inspect.isfunction(obj)):
                docs.append((f"{mod.__name__}.{attr}", obj.__doc__))
                if inspect.isclass(obj):
                    docs += [(f"{mod.__name__}.{attr}.{k}", getattr(v, "__doc__", None)) for k, v in vars(obj).items()
                             if inspect.isfunction(v)]
        for q, doc in docs:
            if doc and re.search(r"seeds? 00\d", doc) and not year.search(doc):
                bad.append(q)
    assert not bad, "a 'seed 00x' pointer needs a paper citation beside it: " + ", ".join(sorted(bad))


def test_sources_hold_no_control_characters() -> None:
    """A docstring with ``\\t``, ``\\a`` or ``\\f`` in a non-raw string turns ``\\tilde``,
    ``\\alpha`` and ``\\frac`` into a tab, a bell and a form feed: the rendered formula is garbage."""
    from pathlib import Path

    ctrl = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
    root = Path(fokker.__file__).parent
    bad = [f"{p.relative_to(root)}:{i}" for p in sorted(root.rglob("*.py"))
           for i, line in enumerate(p.read_text().splitlines(), 1) if ctrl.search(line)]
    assert not bad, "control characters (a LaTeX escape in a non-raw string?) at " + ", ".join(bad)
