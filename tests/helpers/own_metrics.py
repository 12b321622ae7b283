"""A person's own metrics, as a person would write them in their package (tests only)."""
import torch


def top2(outputs, targets):
    """Top-2 accuracy of class scores against labels, and the mean top score."""
    hit = (outputs.topk(2, dim=1).indices == targets[:, None]).any(1)
    return {"top2": hit.float().mean(), "mean top score": float(outputs.max(1).values.mean())}


def leaf_norms(outputs, targets):
    """For a nest judged against the base (task fidelity): each leaf's norm relative to the base's."""
    return {f"norm {k}": float(v.norm() / targets[k].norm()) for k, v in outputs.items()}


def not_named(outputs, targets):
    return [0.5]


def raises(outputs, targets):
    raise KeyError("labels")


def not_finite(outputs, targets):
    return {"x": float("nan")}


__all__ = ["top2", "leaf_norms", "not_named", "raises", "not_finite", "torch"]
