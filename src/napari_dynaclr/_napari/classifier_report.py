"""What the Cells tab says about a trained classifier, so that its numbers are read for what they are worth.

For each split (VisCy's 80/20 cell split, and a track split: no track on both sides): the validation accuracy,
the labelled cells per class on the training and on the validation side, and the accuracy cross-validated
over k folds with its spread (± the standard deviation over the folds); a warning when a validation side holds
fewer than :data:`~napari_dynaclr.evaluate.classifier.MIN_VALIDATION_CELLS` cells of a class (the work
process's ``classify`` result carries all of it). Qt-free.
"""

from __future__ import annotations

SPLIT_NAMES = {"cell": "cell split (VisCy's 80/20)", "track": "track split (no track on both sides)"}


def _counts(counts: dict) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items()) or "none"


def split_summary(split: str, metrics: dict, quality: dict) -> str:
    """One split's lines: validation accuracy, the cells per class on each side, the cross-validated accuracy."""
    acc = metrics.get("val_accuracy")
    head = f"{SPLIT_NAMES.get(split, split)}: validation accuracy "
    head += f"{acc:.3f}" if isinstance(acc, (int, float)) else "—"
    lines = [head,
             f"  cells per class — training: {_counts(quality.get('train_counts', {}))}; "
             f"validation: {_counts(quality.get('val_counts', {}))}"]
    cv = quality.get("cross_validation")
    if cv:
        lines.append(f"  cross-validated accuracy {cv['mean']:.3f} ± {cv['std']:.3f} over {cv['n_splits']} folds")
    elif quality.get("cross_validation_note"):
        lines.append(f"  no cross-validation: {quality['cross_validation_note']}")
    return "\n".join(lines)


def classifier_summary(task: str, result: dict) -> tuple[str, str | None]:
    """The text of a ``classify`` result and its warning (None when the validation sides are large enough)."""
    splits = result.get("splits", {})
    parts = [f"{len(result['classes'])} classes: {', '.join(map(str, result['classes']))}"]
    parts += [split_summary(split, result["metrics"].get(split, {}), splits.get(split, {}))
              for split in result["metrics"]]
    parts.append(f"columns predicted_{task}, predicted_{task}_proba (a model fitted on every labelled cell)")
    if result.get("notes"):
        parts.append("; ".join(result["notes"]))
    warning = result.get("warning")
    return "\n".join(parts), (f"⚠ {warning}" if warning else None)
