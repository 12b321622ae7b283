"""A person's own models: ``register``, ``unregister`` (imported by ``core.cli``)."""
from __future__ import annotations

import json

from .common import UsageError, command


def _register_args(p):
    p.add_argument("name", help="the name to open it by (letters, digits, _ . -)")
    p.add_argument("--factory", required=True, help="an importable package.module:function that builds the model")
    p.add_argument("--kwargs", default="{}", help="the factory's keyword arguments as a JSON object (default {})")
    p.add_argument("--weights", help="a safetensors file, or a state dict saved with torch.save (read with "
                                     "weights_only=True); default: random weights")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--data", help="an .npz or .safetensors file holding x (inputs) and optionally y (labels 0..K-1)")
    g.add_argument("--synthetic", type=int, metavar="N", help="N seeded random inputs (no labels: fidelity)")
    g.add_argument("--dataset", help="a registered dataset (see `prunescope datasets`)")
    p.add_argument("--input-shape", help="one example's shape, e.g. 3,32,32 (read from --data when given)")
    p.add_argument("--task", choices=["classification", "fidelity"],
                   help="default: classification when the data has labels, else fidelity")
    p.add_argument("--json", action="store_true")


@command("register", "register your own model (a factory from your environment) with its data, remembered "
                     "across restarts", _register_args)
def cmd_register(args):
    from core.models import param_count
    from core.user_models import home, parse_shape, register

    try:
        kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--kwargs must be a JSON object, e.g. '{{\"num_classes\": 10}}': {exc}") from None
    if not isinstance(kwargs, dict):
        raise UsageError(f"--kwargs must be a JSON object, got {args.kwargs!r}")
    data = ({"kind": "tensors", "path": args.data} if args.data else
            {"kind": "synthetic", "n": args.synthetic} if args.synthetic is not None else
            {"kind": "dataset", "name": args.dataset})
    spec = register(args.name, factory=args.factory, kwargs=kwargs, weights=args.weights, data=data,
                    input_shape=parse_shape(args.input_shape), task=args.task)
    return {"name": spec.name, "source": spec.description, "task": spec.task, "dataset": spec.dataset,
            "input_shape": list(spec.input_shape), "params": param_count(spec), "weights": spec.weights,
            "stored_in": str(home())}


def _unregister_args(p):
    p.add_argument("name")
    p.add_argument("--json", action="store_true")


@command("unregister", "forget one of your models", _unregister_args)
def cmd_unregister(args):
    from core.user_models import unregister

    unregister(args.name)
    return {"unregistered": args.name}
