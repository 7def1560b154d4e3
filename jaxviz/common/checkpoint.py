"""Orbax checkpoints of a run, keyed by everything that determines its numbers.

A run directory holds ``run.json`` (the metadata the run was started with) and one Orbax
checkpoint manager per launch. Rerunning with the same metadata resumes; different metadata is a
:class:`CheckpointMismatchError` instead of silently mixing two runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

import jax
import numpy as np

from jaxviz.common import readers
from jaxviz.common.errors import CheckpointMismatchError, OutputError
from jaxviz.common.files import atomic_write_json, check_writable_dir, stderr_held, to_json, write_failure

__all__ = ["CheckpointMismatchError", "RunStore"]


def _flatten(tree: Any, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        flat = {}
        for k, v in tree.items():
            flat.update(_flatten(v, f"{prefix}{k}."))
        return flat
    return {prefix[:-1]: tree}


class RunStore:
    """Checkpoints of one run (one Orbax manager per launch of targets).

    Args:
      directory: the checkpoint directory (created if missing).
      **metadata: JSON-able description of the run; must match on resume.
    """

    def __init__(self, directory: str, **metadata):
        self.directory = check_writable_dir(directory, "checkpoint_dir=")
        meta = {k: (v.numbers() if hasattr(v, "numbers") else v) for k, v in metadata.items()}
        meta = to_json(meta, sort_keys=True)
        path = os.path.join(self.directory, "run.json")
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    saved = json.load(f)
            except (OSError, ValueError) as e:
                raise CheckpointMismatchError(f"checkpoint dir {self.directory} has an unreadable run.json "
                                              f"({type(e).__name__}); use another checkpoint_dir= or delete it") from None
            if not isinstance(saved, dict):
                saved = {"run.json": saved}
            if saved != meta:
                old, new = _flatten(saved), _flatten(meta)
                differ = [f"{k} {old.get(k)!r:.40} → {new.get(k)!r:.40}"
                          for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
                raise CheckpointMismatchError(
                    f"checkpoint dir {self.directory} holds another run ({'; '.join(differ[:3])}); "
                    "use another checkpoint_dir= or delete it")
        else:
            atomic_write_json(path, meta, sort_keys=True)
        self._managers: dict = {}

    def _manager(self, launch_id: str):
        if launch_id not in self._managers:
            import orbax.checkpoint as ocp  # imported when a run checkpoints: ~0.2 s of every start otherwise

            options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)
            self._managers[launch_id] = ocp.CheckpointManager(
                os.path.join(self.directory, launch_id), options=options)
        return self._managers[launch_id]

    def save(self, launch_id: str, step: int, state, log: np.ndarray) -> None:
        """Saves ``(state, log)`` at ``step`` (only called with finite values)."""
        import orbax.checkpoint as ocp

        manager = self._manager(launch_id)
        # flat leaves: the template's treedef rebuilds any NamedTuple/optax state on restore
        leaves = {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(state))}
        kept = manager.latest_step()
        try:
            with stderr_held():  # Orbax's threads print tracebacks of a full disk: one line instead
                try:
                    manager.save(step, args=ocp.args.StandardSave({"state": leaves, "log": log}), force=True)
                    manager.wait_until_finished()
                except Exception:
                    with contextlib.suppress(Exception):  # its threads finish here, still held
                        manager.close()
                    time.sleep(0.5)  # tensorstore's callbacks on Orbax's closed event loop print a little later
                    self._managers.pop(launch_id, None)
                    raise
        except Exception as e:  # noqa: BLE001 - OSError, or tensorstore's own error for a full disk
            what = ("nothing of this run was checkpointed yet" if kept is None else
                    f"the checkpoint of step {kept} is kept; a rerun resumes there")
            raise OutputError(f"cannot write a checkpoint to {self.directory} ({write_failure(e)}); {what}") from None

    def restore(self, launch_id: str, state_template, log_template: np.ndarray):
        """Latest ``(state, log)`` of a launch, laid out like the templates, or ``None``."""
        manager = self._manager(launch_id)
        step = manager.latest_step()
        if step is None:
            return None

        def abstract(x):
            sharding = getattr(x, "sharding", None)
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

        leaves, treedef = jax.tree.flatten(state_template)
        template = {"state": {f"{i:05d}": abstract(x) for i, x in enumerate(leaves)}, "log": log_template}
        import orbax.checkpoint as ocp

        readers.regular_tree(os.path.join(self.directory, launch_id, str(step)), fix="delete it to start over",
                             error=CheckpointMismatchError)  # a FIFO in it would block the restore forever
        try:
            restored = manager.restore(step, args=ocp.args.StandardRestore(template))
        except Exception as e:  # noqa: BLE001 - a damaged checkpoint: orbax/tensorstore raise many types
            raise CheckpointMismatchError(f"the checkpoint in {self.directory} cannot be read ({type(e).__name__}); "
                                          "delete it to start over") from None
        state = jax.tree.unflatten(treedef, [restored["state"][f"{i:05d}"] for i in range(len(leaves))])
        return state, np.asarray(restored["log"])

    def close(self) -> None:
        for manager in self._managers.values():
            manager.close()
