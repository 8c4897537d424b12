"""What a run folder was made with (identity.json), and the refusal to resume a folder made with
another recipe or data. The loop that fills the folder is training/trainer.py."""
from __future__ import annotations

import json
from pathlib import Path

from training.config import DEFAULTS
from training.data.meta import MetaInfo
from qfm_core.files import write_json


def run_identity(cfg: dict, sources, val_meta: MetaInfo | None) -> dict:
    """What a run folder was made with: the config (less train.epochs, which a resume may extend)
    and each data source's name, size and label kind. A changed recipe, or a data set rebuilt with
    another number of images, gives another identity (same-size content changes are not seen)."""
    cfg = {**cfg, "train": {k: v for k, v in cfg["train"].items() if k != "epochs"}}
    return json.loads(json.dumps({
        "config": cfg,
        "train_sources": [{"name": s.meta.name, "n": len(s.meta), "samples_per_epoch": s.samples_per_epoch,
                           "labels": s.labels, "group_size": s.group_size} for s in sources],
        "val": None if val_meta is None else {"name": val_meta.name, "n": len(val_meta)}}, default=str))


def _without_new_defaults(new: dict, old: dict, defaults: dict) -> dict:
    """`new` config less the options `old` lacks that sit at their default: an option added to the
    code after a folder was made keeps the old behaviour at its default, so it is the same recipe."""
    out = {}
    for k, v in new.items():
        if k not in old:
            if k not in defaults or defaults[k] != v:
                out[k] = v
        elif isinstance(v, dict) and isinstance(old[k], dict) and isinstance(defaults.get(k), dict):
            out[k] = _without_new_defaults(v, old[k], defaults[k])
        else:
            out[k] = v
    return out


def check_identity(out: Path, identity: dict) -> None:
    """Refuse to resume (or skip as finished) a run folder made with another recipe or data: a
    silent mix of two recipes is worse than an error. Folders made before this check have no
    identity file and are trusted; options added since, left at their defaults, are ignored."""
    path = out / "identity.json"
    if path.exists():
        old = json.loads(path.read_text())
        identity = {**identity, "config": _without_new_defaults(identity["config"], old.get("config", {}),
                                                                 json.loads(json.dumps(DEFAULTS)))}
        if old != identity:
            diff = sorted(k for k in identity if old.get(k) != identity[k])
            raise ValueError(f"{out} was made with a different {' and '.join(diff)} (see {path}); delete the "
                             "folder (or pass --fresh to train.py) to start this run over")
        return
    write_json(path, identity)
