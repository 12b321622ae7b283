"""A copy of a module tree with some parameters replaced, at a fraction of ``deepcopy``'s cost.

``copy.deepcopy`` of a ResNet-50 runs about 50,000 Python calls (every attribute, tuple and
dict of every module); on a GPU that host time, not the arithmetic, dominated a threshold
move (measured on an H200: a move took 1.76x a forward + mask pass, 48 ms of it deepcopy).
A weight-level prune changes no structure, so :func:`clone_with` copies only what a module
owns: each module object once (shared modules stay shared), its ``_parameters`` and
``_buffers`` as new tensors (``clone``: one device copy each, queued, no host work), its
``_modules``, and every other container attribute (hook dicts, lists, sets) shallowly.

Only plain modules take this path: a module holding a tensor, a module or an object of
unknown kind outside those containers, a parameter or buffer of a tensor subclass, or a
class with its own copy behaviour (TorchScript, parametrizations), or a module with hooks, is copied with
``deepcopy`` instead (``clone_with`` decides for the whole tree, before copying anything).
"""
from __future__ import annotations

import collections
import copy
import enum
import functools
import types

import torch
from torch import nn

_OWN = ("_parameters", "_buffers", "_modules")
# shallow-copied by calling the type: copy.copy reduces an OrderedDict through copyreg (a
# class walk per call, 88 of them per MLP clone, measured 1 ms each on a busy host)
_BUILTIN_CONTAINERS = (dict, list, set, collections.OrderedDict)
_SHARED_OK = (int, float, bool, str, bytes, type(None), torch.dtype, torch.device, torch.Size, torch.layout,
              torch.memory_format, type, types.FunctionType, types.BuiltinFunctionType, enum.Enum, range, slice)


def _plain_value(v) -> bool:
    """A value two module copies may share: immutable and holding no module or tensor (a
    bound method is not: it would call the source module)."""
    if isinstance(v, _SHARED_OK):
        return True
    if isinstance(v, (tuple, frozenset)):
        return all(_plain_value(x) for x in v)
    if isinstance(v, functools.partial):  # e.g. torchvision's norm_layer
        return _plain_value(v.func) and _plain_value(v.args) and all(_plain_value(x) for x in v.keywords.values())
    return False


def _fast_ok(model: nn.Module) -> bool:
    for m in model.modules():
        cls = type(m)
        if "__deepcopy__" in vars(cls) or isinstance(m, torch.jit.ScriptModule) or hasattr(m, "parametrizations"):
            return False
        for k, v in vars(m).items():
            if k in _OWN:
                continue
            if isinstance(v, (dict, list, set)):  # hook dicts (must be empty), lists of ints, name sets
                if "hook" in k:
                    if v:  # a hook may be bound to this module: deepcopy rebinds it, a shallow copy would not
                        return False
                    continue
                if not all(_plain_value(x) for x in (v.values() if isinstance(v, dict) else v)):
                    return False
            elif not _plain_value(v):
                return False
        for p in m._parameters.values():
            if p is not None and type(p) is not nn.Parameter:
                return False
        for b in m._buffers.values():
            if b is not None and type(b) is not torch.Tensor:
                return False
    return True


def clone_with(model: nn.Module, replace: dict[int, nn.Parameter] | None = None) -> nn.Module:
    """A copy of ``model`` sharing no tensor with it, where each parameter whose ``id`` is
    a key of ``replace`` becomes that value (not copied). Same result as
    ``copy.deepcopy(model, replace)``; faster for plain module trees (see the module doc).
    """
    replace = dict(replace or {})
    if not _fast_ok(model):
        return copy.deepcopy(model, replace)
    done: dict[int, object] = dict(replace)

    def tensor(t, as_param: bool):
        if t is None:
            return None
        got = done.get(id(t))
        if got is None:
            c = t.detach().clone()
            got = nn.Parameter(c, requires_grad=t.requires_grad) if as_param else c
            done[id(t)] = got
        return got

    def mod(m: nn.Module) -> nn.Module:
        got = done.get(id(m))
        if got is not None:
            return got
        r = object.__new__(type(m))
        done[id(m)] = r
        d = {}
        for k, v in vars(m).items():
            if k == "_parameters":
                d[k] = {n: tensor(p, True) for n, p in v.items()}
            elif k == "_buffers":
                d[k] = {n: tensor(b, False) for n, b in v.items()}
            elif k == "_modules":
                d[k] = {n: None if c is None else mod(c) for n, c in v.items()}
            elif type(v) in _BUILTIN_CONTAINERS:
                d[k] = type(v)(v)  # an (empty) OrderedDict of hooks stays an OrderedDict
            elif isinstance(v, (dict, list, set)):
                d[k] = copy.copy(v)
            else:
                d[k] = v
        r.__dict__.update(d)
        return r

    try:
        return mod(model)
    finally:  # `mod` refers to itself through its closure, a cycle that would hold `done`, so the whole
        done.clear()  # copy, until the cyclic collector runs: measured as up to 5 dead 100 M models held


__all__ = ["clone_with"]
