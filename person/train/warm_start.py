"""`--init CKPT [CKPT]`: a new run that starts from earlier runs' students (fine-tuning, adapting to a user's site;
two checkpoints join runs that trained one student each, as the three-stage order does: image alone, text alone,
then both).

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


def _spec_options(spec: StudentSpec, student: str) -> dict[str, Any]:
    """The training options that made `spec`'s `student` ("image" or "text"), the ones a run picks it by."""
    if student == "image":
        return {"image_size": f"{spec.image_size[0]}x{spec.image_size[1]}", "resize": spec.resize,
                "backbone": spec.backbone}
    return {"tbackbone": spec.tbackbone, "text_width": spec.text_width, "text_stride": spec.text_stride,
            "max_seq_length": spec.max_seq_length}


def init_options(opts: TrainOptions, given: set[str]) -> tuple[TrainOptions, dict[str, dict[str, Any]]]:
    """`opts` with the student options of the `opts.init` checkpoints where the command line leaves them, and the
    checkpoint each trained student comes from (the first given that has it: `--init IMAGE_STAGE TEXT_STAGE` joins
    two runs that trained one student each); a student option given otherwise, a student none of them has, or two
    checkpoints of other feature dimensions are refused."""
    states = []
    for path in opts.init:
        try:
            states.append(load_checkpoint(path))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"--init {path}: {e}; give a checkpoint of an earlier run of main.py") from None
    wanted = ("image", "text") if opts.train == "both" else (opts.train,)
    chosen: dict[str, dict[str, Any]] = {}
    for student in wanted:
        having = [s for s in states if student_spec(s).trained in (student, "both")]
        if not having:
            trained = ", ".join(f"{s['path']} --train {student_spec(s).trained}" for s in states)
            raise OptionError(f"--init {' '.join(opts.init)} has no {student} student ({trained}); train --train "
                              f"{student_spec(states[0]).trained}, or add a checkpoint that has one")
        chosen[student] = having[0]
    dims = {s["path"]: student_spec(s).feature_dim for s in chosen.values()}
    if len(set(dims.values())) > 1:
        raise OptionError(f"--init: the students' checkpoints have other feature dimensions ({dims}); they would not "
                          f"share one space")
    values = {"feature_dim": next(iter(dims.values()))}
    for student, state in chosen.items():
        values |= _spec_options(student_spec(state), student)
    clashes = [f"--{k} {getattr(opts, k)!r} (checkpoint: {v!r})" for k, v in values.items()
               if k in given and _canonical(k, getattr(opts, k)) != _canonical(k, v)]
    if clashes:
        raise OptionError(f"--init {' '.join(opts.init)} holds other students than the options ask for: "
                          f"{', '.join(clashes)}; drop them to continue from its students, or drop --init to train "
                          f"new ones")
    return replace(opts, **values), chosen


def _canonical(key: str, value: Any) -> Any:
    return parse_image_size(value) if key == "image_size" else value


def check_init_teacher(init: dict[str, dict[str, Any]], store: FeatureStore) -> None:
    """Refuse a checkpoint whose students learned another space than the labelled store's teacher's."""
    for state in init.values():
        check_same_space(space_of(state.get("teacher") or {}), space_of(store.teacher_identity),
                         f"--init {state['path']}", f"--embedding_path {store.path}")


def load_init(students: Students, init: dict[str, dict[str, Any]]) -> None:
    """Put each trained student's weights from its checkpoint (`init_options`) into the run's students."""
    for name, state in init.items():
        module = getattr(students, name)
        part = {k[len(name) + 1:]: v for k, v in state["model"].items() if k.startswith(name + ".")}
        try:
            module.load_state_dict(part)
        except RuntimeError as e:
            raise CheckpointError(f"--init {state['path']}: its {name} student's weights do not fit "
                                  f"({str(e).splitlines()[0][:300]})") from None
