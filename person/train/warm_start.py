"""`--init CKPT`: a new run that starts from an earlier run's students (fine-tuning, adapting to a user's site).

Only the weights carry over: the optimiser, the schedule, the long memory and the iteration start anew, as in any
fine-tuning. The students keep their architecture, so the student options default to the checkpoint's own; one
given on the command line that differs is refused (the weights would not fit). The checkpoint must have learned
the labelled store's teacher's space (person.teacher.space: its preprocessing may differ).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from person.data.images import parse_image_size
from person.models.checkpoint import CheckpointError, load_checkpoint, student_spec
from person.models.students import Students, StudentSpec
from person.options import OptionError
from person.teacher.space import check_same_space, space_of
from person.teacher.store import FeatureStore
from person.train.options import TrainOptions


def _spec_options(spec: StudentSpec) -> dict[str, Any]:
    """The training options that made `spec`'s students (the ones a run picks its students by)."""
    out = {"image_size": f"{spec.image_size[0]}x{spec.image_size[1]}", "resize": spec.resize,
           "feature_dim": spec.feature_dim, "max_seq_length": spec.max_seq_length}
    if spec.backbone:
        out["backbone"] = spec.backbone
    if spec.tbackbone:
        out.update(tbackbone=spec.tbackbone, text_width=spec.text_width, text_stride=spec.text_stride)
    return out


def init_options(opts: TrainOptions, given: set[str]) -> tuple[TrainOptions, dict[str, Any]]:
    """`opts` with the student options of `opts.init`'s checkpoint where the command line leaves them, and the
    checkpoint; a student option given otherwise, or a student the checkpoint lacks, is refused."""
    try:
        state = load_checkpoint(opts.init)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--init {opts.init}: {e}; give a checkpoint of an earlier run of main.py") from None
    spec = student_spec(state)
    wanted = {"image", "text"} if opts.train == "both" else {opts.train}
    has = {"image"} if spec.trained == "image" else {"text"} if spec.trained == "text" else {"image", "text"}
    if wanted - has:
        missing = (wanted - has).pop()
        raise OptionError(f"--init {state['path']} has no {missing} student (its run trained --train {spec.trained}); "
                          f"train --train {spec.trained}, or start from a checkpoint that has both")
    values = _spec_options(spec)
    clashes = [f"--{k} {getattr(opts, k)!r} (checkpoint: {v!r})" for k, v in values.items()
               if k in given and _canonical(k, getattr(opts, k)) != _canonical(k, v)]
    if clashes:
        raise OptionError(f"--init {state['path']} holds other students than the options ask for: {', '.join(clashes)}; "
                          f"drop them to continue from its students, or drop --init to train new ones")
    return replace(opts, **values), state


def _canonical(key: str, value: Any) -> Any:
    return parse_image_size(value) if key == "image_size" else value


def check_init_teacher(state: dict[str, Any], store: FeatureStore) -> None:
    """Refuse a checkpoint whose students learned another space than the labelled store's teacher's."""
    check_same_space(space_of(state.get("teacher") or {}), space_of(store.teacher_identity),
                     f"--init {state['path']}", f"--embedding_path {store.path}")


def load_init(students: Students, state: dict[str, Any]) -> None:
    """Put the checkpoint's weights into the run's students (those the run trains)."""
    weights = state["model"]
    for name in ("image", "text"):
        module = getattr(students, name)
        if module is None:
            continue
        part = {k[len(name) + 1:]: v for k, v in weights.items() if k.startswith(name + ".")}
        try:
            module.load_state_dict(part)
        except RuntimeError as e:
            raise CheckpointError(f"--init {state['path']}: its {name} student's weights do not fit "
                                  f"({str(e).splitlines()[0][:300]})") from None
