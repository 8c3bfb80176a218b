"""How the DynaCLR dock words the engine's messages: the run's settings by the dock's controls, and what to do
(an error's :class:`~napari_dynaclr.errors.Remedy`) by what to tick or choose there."""

from __future__ import annotations

from napari_dynaclr.errors import DynaclrError, Wording

#: setting -> the dock's control (settings the dock has no control for: where the predict.yml has them)
CONTROLS = {
    "ckpt_path": "'checkpoint'", "data_path": "'plate'", "tracks_path": "'tracks folder'",
    "source_channel": "'source channels'", "z_range": "'z start'/'z stop'",
    "initial_yx_patch_size": "'patch (initial YX)'", "final_yx_patch_size": "'patch (final YX)'",
    "batch_size": "'batch size'", "include_wells": "'FOVs to predict'", "exclude_fovs": "'FOVs to predict'",
    "output_path": "'output store'", "overwrite": "'overwrite'", "accelerator": "'device'",
    "allow_nonfinite": "'allow non-finite values'", "normalizations": "'normalisation'",
    "precision": "trainer precision in the predict.yml", "devices": "trainer devices in the predict.yml",
    "num_nodes": "trainer num_nodes in the predict.yml",
}
#: where a control is, when asked to tick it
WHERE = {"allow_nonfinite": " (Predict > Advanced settings)", "overwrite": " in the DynaCLR dock"}
#: how the dock asks for a value it cannot do without
CHOOSE = {"output_path": "choose an 'output store'", "ckpt_path": "choose a 'checkpoint'"}


class DockWording(Wording):
    names = CONTROLS

    def turn_on(self, key: str) -> str:
        return f"tick {self.name(key)}{WHERE.get(key, '')}"

    def give(self, key: str) -> str:
        return CHOOSE.get(key, f"choose {self.name(key)}")


DOCK = DockWording()


def error_message(exc: BaseException) -> str:
    """What the dock says about *exc*: our own errors in the dock's words, others with their type."""
    if isinstance(exc, DynaclrError):
        return exc.describe(DOCK)
    return f"{type(exc).__name__}: {exc}"
