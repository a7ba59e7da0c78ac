"""Trace a batched tensor function once into an FX graph of aten operations, simplify it, optionally compile it.

Used by :class:`fokker.targets.pyro.PyroTarget` to turn "run the Pyro model under
``vmap`` for every gradient" into one straight-line tensor program per batch shape:

1. :func:`trace` records one call ``fn(example)`` with ``make_fx``: every
   Python-level cost (Pyro's messengers, distribution objects, ``vmap``'s
   dispatch) is paid once.  Tensors ``fn`` closes over (the model's data) become
   constants of the graph.  A function that turns a traced tensor into a Python
   number (``.item()``, ``if x > 0``) cannot be traced: ``make_fx`` raises and the
   caller keeps its eager path.  (Under ``vmap`` such a use of the batched input is
   an error anyway, so a traced graph never bakes in a value of the input.)
2. :func:`simplify` removes what tracing leaves behind: it folds every operation
   whose inputs are constants (data transforms, ``log(sigma)`` of fixed scales,
   ``ones_like`` of a statically known shape, ...) into a stored tensor, drops
   identities (``x + 0``, ``x * 1``, ``x ** 1``, views and copies to the same
   shape and dtype), merges repeated operations (common subexpressions) and
   removes dead code.  Random operations are never folded or merged.
3. :func:`cuda_graphed` records the graph once as a CUDA graph (replayed with
   one launch), :func:`inductor` hands it to ``torch.compile``.

Both compiled forms are checked against the eager path by the caller before use.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import fx

__all__ = ["trace", "simplify", "cuda_graphed", "inductor"]

_aten = torch.ops.aten

#: ops returning their (first) input when the output has the same shape, dtype and device.
_SAME_SHAPE_IDENTITIES = {
    _aten.view.default,
    _aten.reshape.default,
    _aten._unsafe_view.default,
    _aten.expand.default,
    _aten.alias.default,
    _aten.clone.default,
    _aten.lift_fresh_copy.default,
    _aten.detach.default,
    _aten._to_copy.default,
    _aten.contiguous.default,
}
#: factory ops whose value depends only on the (static) shape of their tensor argument.
_LIKE_FACTORIES = {
    _aten.zeros_like.default,
    _aten.ones_like.default,
    _aten.full_like.default,
}
_ADD = {_aten.add.Tensor, _aten.add.Scalar}
_ADD_SUB = _ADD | {_aten.sub.Tensor, _aten.sub.Scalar}
_MUL = {_aten.mul.Tensor, _aten.mul.Scalar}
_DIV = {_aten.div.Tensor, _aten.div.Scalar}
_MUL_DIV = _MUL | _DIV


def trace(fn: Callable[[torch.Tensor], Any], example: torch.Tensor) -> fx.GraphModule:
    """``fn`` recorded at the shape, dtype and device of ``example`` as a functional aten graph (no mutations)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def one_argument(x: torch.Tensor) -> Any:  # make_fx reads the signature: hide bound methods' ``self``
        return fn(x)

    gm = make_fx(torch.func.functionalize(one_argument), tracing_mode="real")(example)
    return simplify(gm)


def _meta(node: Any) -> Any:
    return node.meta.get("val") if isinstance(node, fx.Node) else None


def _same_tensor_type(a: Any, b: Any) -> bool:
    return (
        isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
        and a.dtype == b.dtype and a.device == b.device
    )


def _is_pure(node: fx.Node) -> bool:
    t = node.target
    if node.op != "call_function" or not isinstance(t, torch._ops.OpOverload):
        return False
    return torch.Tag.nondeterministic_seeded not in t.tags and not t._schema.is_mutable


class _Simplifier:
    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.graph = gm.graph
        self.consts: dict[fx.Node, torch.Tensor] = {}
        self.count = 0
        self.erased: set[fx.Node] = set()
        for node in self.graph.nodes:
            if node.op == "get_attr":
                value = getattr(gm, node.target)
                if isinstance(value, torch.Tensor):
                    self.consts[node] = value

    def _erase(self, node: fx.Node) -> None:
        self.graph.erase_node(node)
        self.erased.add(node)

    # ------------------------------------------------------------ constants
    def _const_node(self, before: fx.Node, value: torch.Tensor) -> fx.Node:
        name = f"_folded_{self.count}"
        self.count += 1
        self.gm.register_buffer(name, value.detach())
        with self.graph.inserting_before(before):
            new = self.graph.get_attr(name)
        new.meta["val"] = _meta(before)
        self.consts[new] = value
        return new

    def _value(self, a: Any) -> Any:
        if isinstance(a, fx.Node):
            return self.consts[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self._value(x) for x in a)
        return a

    def _all_const(self, a: Any) -> bool:
        if isinstance(a, fx.Node):
            return a in self.consts
        if isinstance(a, (list, tuple)):
            return all(self._all_const(x) for x in a)
        return True

    def fold(self, node: fx.Node) -> bool:
        if not _is_pure(node):
            return False
        if node.target in _LIKE_FACTORIES and isinstance(node.args[0], fx.Node):
            ref = _meta(node.args[0])
            if not isinstance(ref, torch.Tensor):
                return False
            real = torch.zeros(ref.shape, dtype=ref.dtype, device=ref.device)
            args = (real, *self._value(node.args[1:]))
            if not self._all_const(node.args[1:]) or not self._all_const(list(node.kwargs.values())):
                return False
        elif self._all_const(node.args) and self._all_const(list(node.kwargs.values())):
            args = self._value(node.args)
        else:
            return False
        out = node.target(*args, **{k: self._value(v) for k, v in node.kwargs.items()})
        if isinstance(out, (list, tuple)):  # multi-output ops (split, ...): fold the getitems that read them
            users = list(node.users)
            if not all(u.target is operator.getitem and isinstance(u.args[1], int) for u in users):
                return False
            for u in users:
                u.replace_all_uses_with(self._const_node(u, out[u.args[1]]))
                self._erase(u)
            self._erase(node)
            return True
        if not isinstance(out, torch.Tensor):
            return False
        node.replace_all_uses_with(self._const_node(node, out))
        self._erase(node)
        return True

    # ----------------------------------------------------------- identities
    def identity(self, node: fx.Node) -> bool:
        if node.op != "call_function" or not node.args or not isinstance(node.args[0], fx.Node):
            return False
        src, out = node.args[0], _meta(node)
        if not _same_tensor_type(_meta(src), out):
            return False
        t = node.target
        if t in _SAME_SHAPE_IDENTITIES:
            ok = True
        elif len(node.args) == 2 and not node.kwargs.get("alpha", 1) != 1:
            other = node.args[1]
            if isinstance(other, fx.Node):
                c = self.consts.get(other)
                if c is None or c.numel() > 64:
                    return False
                scalar = c.flatten()[0].item() if bool((c == c.flatten()[0]).all()) else None
            else:
                scalar = other
            ok = (
                (t in (_aten.add.Tensor, _aten.sub.Tensor, _aten.add.Scalar, _aten.sub.Scalar) and scalar == 0)
                or (t in (_aten.mul.Tensor, _aten.div.Tensor, _aten.mul.Scalar, _aten.div.Scalar) and scalar == 1)
                or (t in (_aten.pow.Tensor_Scalar,) and scalar == 1)
            )
        else:
            ok = False
        if ok:
            node.replace_all_uses_with(src)
            self._erase(node)
        return ok

    # ------------------------------------------------------------- algebra
    def _const(self, a: Any) -> Any:
        """The value of a constant operand (a Python number or a folded tensor), else ``None``."""
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            return a
        return self.consts.get(a) if isinstance(a, fx.Node) else None

    def _rewrite_as(self, node: fx.Node, target: Any, x: fx.Node, k: Any) -> bool:
        """Replace ``node`` by ``target(x, k)`` if that has the same shape and dtype."""
        xv, out = _meta(x), _meta(node)
        if not isinstance(xv, torch.Tensor) or not isinstance(out, torch.Tensor):
            return False
        kshape = k.shape if isinstance(k, torch.Tensor) else ()
        try:
            same = torch.broadcast_shapes(xv.shape, kshape) == out.shape and torch.result_type(xv, k) == out.dtype
        except RuntimeError:
            return False
        if not same:
            return False
        if isinstance(k, torch.Tensor):
            if k.dim() == 0 and k.dtype == xv.dtype:
                k = k.item()  # a 0-d constant of the same dtype: a Python number (no tensor operand)
            else:
                k = self._const_node(node, k.to(xv.device))
        with self.graph.inserting_before(node):
            new = self.graph.call_function(target, (x, k))
        new.meta["val"] = out
        node.replace_all_uses_with(new)
        self._erase(node)
        return True

    def algebra(self, node: fx.Node) -> bool:
        """``sum(unsqueeze(y))`` -> ``y``; ``x ** 2`` -> ``x * x``; ``-x * c`` and ``-(x * c)`` -> ``x * (-c)``;
        ``c * x`` -> ``x * c``; ``(x + c1) - c2`` -> ``x + (c1 - c2)``; ``(x * c1) / c2`` -> ``x * (c1 / c2)``."""
        t, args = node.target, node.args
        if t is _aten.neg.default and isinstance(args[0], fx.Node) and len(args[0].users) == 1:
            inner = args[0]  # -(x * c) -> x * (-c)
            if inner.target in _MUL_DIV and not inner.kwargs and len(inner.args) == 2:
                c = self._const(inner.args[1])
                if c is not None and isinstance(inner.args[0], fx.Node):
                    return self._rewrite_as(node, inner.target, inner.args[0], -c)
            return False
        if t in (_aten.mul.Tensor, _aten.add.Tensor) and len(args) == 2 and not node.kwargs:
            if self._const(args[0]) is not None and isinstance(args[1], fx.Node) and self._const(args[1]) is None:
                node.args = args = (args[1], args[0])  # constants second: c * x -> x * c
        if node.kwargs or len(args) < 2 or not isinstance(args[0], fx.Node):
            return False
        a = args[0]
        if t is _aten.sum.dim_IntList and a.target is _aten.unsqueeze.default and len(args) == 2:
            y = a.args[0]
            if _same_tensor_type(_meta(y), _meta(node)):
                node.replace_all_uses_with(y)
                self._erase(node)
                return True
            return False
        if t is _aten.pow.Tensor_Scalar and args[1] == 2:
            with self.graph.inserting_before(node):
                new = self.graph.call_function(_aten.mul.Tensor, (a, a))
            new.meta["val"] = _meta(node)
            node.replace_all_uses_with(new)
            self._erase(node)
            return True
        c2 = self._const(args[1]) if len(args) == 2 else None
        if c2 is None:
            return False
        if t in _MUL_DIV and a.target is _aten.neg.default and not a.kwargs:
            neg = -c2
            return self._rewrite_as(node, t, a.args[0], neg)
        if len(a.users) != 1 or a.kwargs or len(a.args) != 2 or not isinstance(a.args[0], fx.Node):
            return False
        c1 = self._const(a.args[1])
        if c1 is None:
            return False
        if t in _ADD_SUB and a.target in _ADD_SUB:
            k = (c1 if a.target in _ADD else -c1) + (c2 if t in _ADD else -c2)
            return self._rewrite_as(node, _aten.add.Tensor, a.args[0], k)
        if t in _MUL_DIV and a.target in _MUL_DIV:
            if a.target in _MUL and t in _MUL:
                return self._rewrite_as(node, _aten.mul.Tensor, a.args[0], c1 * c2)
            if a.target in _DIV and t in _DIV:
                return self._rewrite_as(node, _aten.div.Tensor, a.args[0], c1 * c2)
            k = c1 / c2 if a.target in _MUL else c2 / c1
            return self._rewrite_as(node, _aten.mul.Tensor, a.args[0], k)
        return False

    # ------------------------------------------------------------------ CSE
    @staticmethod
    def _key(a: Any) -> Any:
        if isinstance(a, fx.Node):
            return a
        if isinstance(a, (list, tuple)):
            return (type(a).__name__, tuple(_Simplifier._key(x) for x in a))
        return (type(a).__name__, repr(a))

    def cse(self) -> bool:
        seen: dict[Any, fx.Node] = {}
        changed = False
        for node in list(self.graph.nodes):
            if node.op == "get_attr" and node in self.consts:
                key: Any = ("const", id(self.consts[node]))
            elif _is_pure(node) or (node.op == "call_function" and node.target is operator.getitem):
                key = (node.target, self._key(node.args), self._key(tuple(sorted(node.kwargs.items()))))
            else:
                continue
            if key in seen:
                node.replace_all_uses_with(seen[key])
                self._erase(node)
                changed = True
            else:
                seen[key] = node
        return changed

    def run(self) -> fx.GraphModule:
        for _ in range(10):
            changed = False
            for node in list(self.graph.nodes):
                if node.op == "call_function" and node not in self.erased:
                    changed |= self.fold(node) or self.identity(node) or self.algebra(node)
            changed |= self.cse()
            self.graph.eliminate_dead_code()
            if not changed:
                break
        self.graph.lint()
        self.gm.delete_all_unused_submodules()
        self.gm.recompile()
        return self.gm

def simplify(gm: fx.GraphModule) -> fx.GraphModule:
    """Constant folding, identity removal, common-subexpression elimination and dead-code removal, in place."""
    gm.graph.eliminate_dead_code()
    return _Simplifier(gm).run()


def cuda_graphed(fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], example: torch.Tensor) -> Callable:
    """``fn`` recorded as one CUDA graph at ``example``'s shape: each call copies its input in and replays.

    Outputs are cloned (the graph's output buffers are reused by the next replay).
    """
    static_in = example.detach().clone()
    stream = torch.cuda.Stream(device=example.device)
    stream.wait_stream(torch.cuda.current_stream(example.device))
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up on a side stream, as torch.cuda.graphs requires
            fn(static_in)
    torch.cuda.current_stream(example.device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_in)

    def replay(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        static_in.copy_(x)
        graph.replay()
        return tuple(o.clone() for o in static_out)

    replay.graph = graph  # type: ignore[attr-defined]  # keep the graph alive with the function
    return replay


def inductor(gm: fx.GraphModule, example: torch.Tensor) -> Callable:
    """``torch.compile`` of the traced graph (CUDA graphs too on a GPU); compiled on the first call."""
    mode = "reduce-overhead" if example.is_cuda else None
    compiled = torch.compile(gm, dynamic=False, fullgraph=True, mode=mode)
    compiled(example)
    return compiled
