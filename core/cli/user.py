"""A person's own models: ``register``, ``unregister`` (imported by ``core.cli``)."""
from __future__ import annotations

import json

from core.cli.common import UsageError, command


def _register_args(p):
    p.add_argument("name", help="the name to open it by (letters, digits, _ . -)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--factory", help="an importable package.module:function that builds the model")
    src.add_argument("--torchvision", metavar="ARCH", help="a torchvision model by name: classification, "
                                                          "segmentation (e.g. lraspp_mobilenet_v3_large) or video "
                                                          "(e.g. r3d_18); no weights are fetched (needs "
                                                          "prunescope[vision])")
    src.add_argument("--timm", metavar="ARCH", help="a timm model by name (needs prunescope[vision])")
    src.add_argument("--hf", metavar="DIR", help="a local Hugging Face transformers folder (config.json, "
                                                 "safetensors, tokenizer files; needs prunescope[hf])")
    p.add_argument("--kwargs", default="{}", help="the factory's keyword arguments as a JSON object (default {}), "
                                                  "e.g. '{\"num_classes\": 10}'")
    p.add_argument("--weights", help="a safetensors file, or a state dict saved with torch.save (read with "
                                     "weights_only=True); default: random weights")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--data", help="an .npz or .safetensors file holding x (inputs) and optionally y (labels "
                                  "0..K-1, or label masks N,H,W for segmentation: 255 not judged); a .csv table "
                                  "(see --label-column); a folder or .zip with one subfolder of images per class, or "
                                  "with images/ and masks/ (segmentation: a mask per image, same file stem); a .txt "
                                  "file for --hf (one example a line, label<TAB>text for classification)")
    g.add_argument("--synthetic", type=int, metavar="N", help="N seeded random inputs (no labels: fidelity)")
    g.add_argument("--dataset", help="a registered dataset (see `prunescope datasets`)")
    p.add_argument("--label-column", help="the CSV column that holds the labels (none: fidelity)")
    p.add_argument("--image-size", help="images: H,W to resize to (default: from --input-shape or the model's, "
                                        "else 224,224)")
    p.add_argument("--mean", help="images: per-channel mean to subtract, e.g. 0.485,0.456,0.406 (the default)")
    p.add_argument("--std", help="images: per-channel std to divide by, e.g. 0.229,0.224,0.225 (the default)")
    p.add_argument("--seq-len", type=int, help="text: tokens per example (default 64)")
    p.add_argument("--input-shape", help="one example's shape, e.g. 3,32,32 (read from --data when given)")
    p.add_argument("--task", choices=["classification", "fidelity", "language-model", "segmentation", "detection"],
                   help="default: --hf: from the folder's config (a causal LM: language-model); else detection when "
                        "the data is a folder of images/ and a COCO-style .json of boxes (COCO's mAP); segmentation "
                        "when the data has label masks (y of shape N,H,W, or a folder of images/ and masks/: mean "
                        "IoU of the class map), classification when it has labels, else fidelity")
    p.add_argument("--output", choices=["logits", "embedding"],
                   help="what the model returns: class scores (logits) or an embedding / features (embedding: "
                        "task fidelity, judged by output cosine and neighbour recall@k against the base's "
                        "embeddings). Default: --hf of an encoder without a head: embedding; else logits")
    p.add_argument("--judge", metavar="LEAF,LEAF",
                   help="a model of several outputs: the output leaves judged (e.g. out or 0,2; names as the Prune "
                        "page's leaf table lists them); default every floating-point leaf")
    p.add_argument("--metric", metavar="PKG.MOD:FN",
                   help="your own metric from this environment (never from a file): FN(outputs, targets) returning "
                        "{name: number}, shown beside the built-in figures on every evaluation; targets are the "
                        "labels (or masks), or for task fidelity the base model's outputs")
    p.add_argument("--score-threshold", type=float, metavar="S",
                   help="a detector (torchvision's detection models): its boxes scored below S are not detections "
                        "(default 0.5); a pruned detector is judged by the share of the base's boxes it finds again")
    p.add_argument("--json", action="store_true")


def _floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if not text:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise UsageError(f"{flag} must be numbers separated by commas, e.g. 0.5,0.5,0.5; got {text!r}") from exc


@command("register", "register your own model (a factory from your environment) with its data, remembered "
                     "across restarts", _register_args)
def cmd_register(args):
    from core.sources.entries import data_from_path, home, parse_shape, register
    from core.sources.models import param_count

    try:
        kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--kwargs must be a JSON object, e.g. '{{\"num_classes\": 10}}': {exc}") from exc
    if not isinstance(kwargs, dict):
        raise UsageError(f"--kwargs must be a JSON object, got {args.kwargs!r}")
    if args.data:
        data = data_from_path(args.data, label_column=args.label_column, size=parse_shape(args.image_size),
                              mean=_floats(args.mean, "--mean"), std=_floats(args.std, "--std"),
                              seq_len=args.seq_len)
    else:
        data = ({"kind": "synthetic", "n": args.synthetic} if args.synthetic is not None else
                {"kind": "dataset", "name": args.dataset})
    if args.seq_len and not args.data:
        data["seq_len"] = args.seq_len
    spec = register(args.name, factory=args.factory, torchvision=args.torchvision, timm=args.timm, hf=args.hf,
                    kwargs=kwargs,
                    weights=args.weights, data=data, input_shape=parse_shape(args.input_shape), task=args.task,
                    output=args.output, metric=args.metric,
                    judged=[t.strip() for t in args.judge.split(",") if t.strip()] if args.judge else None,
                    score_threshold=args.score_threshold)
    return {"name": spec.name, "source": spec.description, "task": spec.task, "output": spec.output,
            "metric": spec.extra.get("metric"), "judged": spec.extra.get("judged"),
            "score_threshold": spec.extra.get("score_threshold"), "dataset": spec.dataset,
            "input_shape": list(spec.input_shape), "params": param_count(spec), "weights": spec.weights,
            "stored_in": str(home())}


def _unregister_args(p):
    p.add_argument("name")
    p.add_argument("--json", action="store_true")


@command("unregister", "forget one of your models", _unregister_args)
def cmd_unregister(args):
    from core.sources.entries import unregister

    unregister(args.name)
    return {"unregistered": args.name}
