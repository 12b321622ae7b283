"""The zoo's models (``benchmarks/zoo.py``): torchvision's models of the tasks asked, and how each is
opened: as ``--torchvision`` opens it, random weights, seeded synthetic inputs; a detector's
resize set to :data:`DETECTOR_SIZE`, an optical-flow model's pairs to :data:`FLOW_SIDE` px."""
from __future__ import annotations

CALIB = 4  # calibration examples (structured analysis traces one; bridges fit on these)
DETECTOR_SIZE = {"min_size": 320, "max_size": 320}  # a detector's transform resizes to this (said in the notes)
FLOW_SIDE = 128  # an optical-flow model's image pairs: the smallest RAFT's correlation pyramid takes


def _source(arch: str) -> tuple[str, dict, tuple[int, ...], str]:
    """(factory, its kwargs, input shape, output kind) of torchvision's ``arch``, as ``--torchvision``
    opens it (``core.sources.describe``: no weights fetched; a segmenter's class maps are "dense")."""
    import torchvision

    from core.sources.describe import _torchvision_source

    factory, kwargs, shape = _torchvision_source(torchvision, arch, {})
    seg = arch in torchvision.models.list_models(module=torchvision.models.segmentation)
    if arch in torchvision.models.list_models(module=torchvision.models.optical_flow):  # pairs of FLOW_SIDE px
        return factory, kwargs, (2, 3, FLOW_SIDE, FLOW_SIDE), "nest"  # its final flow, {"flow": ...}: judged as a nest
    if arch in torchvision.models.list_models(module=torchvision.models.detection):
        if not arch.startswith("ssd"):  # R-CNNs, RetinaNet, FCOS resize to 800 px: the input's own 320 here
            kwargs = {**kwargs, **DETECTOR_SIZE}
        return factory, kwargs, tuple(shape), "detection"
    return factory, kwargs, tuple(shape), "dense" if seg else "logits"


def _register(arch: str):
    """Register ``arch`` (random weights) with seeded synthetic inputs; returns the model name."""
    import torch

    from core.sources.datasets import DataSplits, register_dataset
    from core.sources.models import register_factory

    factory, kwargs, shape, output = _source(arch)
    ds = f"zoo:{arch}"

    def make() -> DataSplits:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(CALIB + 4, *shape, generator=g)
        y = torch.zeros(CALIB + 4, dtype=torch.long)
        return DataSplits(ds, x[:CALIB], y[:CALIB], x[CALIB:], y[CALIB:], [str(i) for i in range(1000)],
                          kind="image", description="seeded random images (zoo benchmark)")

    register_dataset(ds)(make)
    register_factory(factory, weights=None, dataset=ds, input_shape=shape, name=arch,
                     task="fidelity", kwargs=kwargs, output=output)
    return arch


TASKS = ("classification", "segmentation", "detection", "video", "optical_flow")


def _models(only: str | None, tasks: str = "classification") -> list[str]:
    import torchvision

    modules = {"classification": torchvision.models, "segmentation": torchvision.models.segmentation,
               "detection": torchvision.models.detection, "video": torchvision.models.video,
               "optical_flow": torchvision.models.optical_flow}
    asked = [t.strip() for t in tasks.split(",") if t.strip()]
    if not asked or set(asked) - set(TASKS):
        raise SystemExit(f"--tasks takes some of {', '.join(TASKS)}, got {tasks!r}")
    names = [n for t in asked for n in torchvision.models.list_models(module=modules[t])]
    if only:
        want = [n.strip() for n in only.split(",") if n.strip()]
        unknown = [n for n in want if n not in names]
        if unknown:
            raise SystemExit(f"unknown model(s) {unknown}; torchvision {', '.join(asked)} models: {', '.join(names)}")
        names = want  # in the order given
    return names


__all__ = ["CALIB", "DETECTOR_SIZE", "FLOW_SIDE", "TASKS", "_models", "_register"]
