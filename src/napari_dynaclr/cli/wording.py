"""How the command line words the run's settings in messages: by the flags that set them."""

from __future__ import annotations

from napari_dynaclr.errors import Wording

#: setting -> the flag that sets it (settings without one keep their key)
FLAGS = {
    "ckpt_path": "--ckpt-path", "data_path": "--plate", "tracks_path": "--tracks", "source_channel": "--channels",
    "z_range": "--z-range", "initial_yx_patch_size": "--patch-size", "yx_patch_size": "--patch-size",
    "final_yx_patch_size": "--final-patch-size", "batch_size": "--batch-size", "cell_index_path": "--cell-index",
    "collection_path": "--collection", "experiment_name": "--experiment", "markers": "--markers",
    "pixel_size": "--pixel-size", "perturbation_wells": "--perturbation-wells",
    "interval_minutes": "--interval-minutes", "start_hpi": "--start-hpi", "z_window": "--z-window",
    "z_extraction_window": "--z-extraction-window",
    "z_focus_offset": "--z-focus-offset", "focus_channel": "--focus-channel", "include_wells": "--include-wells",
    "exclude_fovs": "--exclude-fovs", "output_path": "--output", "overwrite": "--overwrite", "accelerator": "--device",
    "devices": "--devices", "strategy": "--strategy", "num_nodes": "--num-nodes", "precision": "--precision",
    "num_workers": "--loader-threads", "cpu_backend": "--cpu-backend", "allow_nonfinite": "--allow-nonfinite",
}
#: where a predict.yml gives what a flag gives, for the settings a run cannot do without
IN_CONFIG = {"output_path": "EmbeddingWriter output_path", "ckpt_path": "ckpt_path in the config"}


class CliWording(Wording):
    names = FLAGS

    def turn_on(self, key: str) -> str:
        return f"pass {self.name(key)}"

    def give(self, key: str) -> str:
        also = f" (or {IN_CONFIG[key]})" if key in IN_CONFIG else ""
        return f"give {self.name(key)}{also}"

    def set(self, key: str, value) -> str:
        return f"pass {self.name(key)} {value}"


CLI = CliWording()
