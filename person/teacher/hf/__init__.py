"""Teachers: big vision-language models loaded offline, frozen, giving L2-normalised embeddings.

`load_teacher(id_or_path)` -> `Teacher` with `encode_images`, `encode_texts`, `dim` and `identity()`.
Supported kinds: SigLIP / SigLIP2 FixRes (`siglip`), SigLIP2 NaFlex (`siglip2-naflex`),
visheratin/mexma-siglip2 (`mexma-siglip2`) and CLIP (`clip`).

- `source`: local directory or HF-cache id -> directory; kind detection; config hash; errors.
- `preprocess`: pad-to-square and the record of the processor's settings.
- `mexma`: the MEXMA-SigLIP2 architecture rebuilt from transformers' towers (its remote code
  does not run on transformers 5).
- `teacher`: the `Teacher` wrapper and the `load_teacher` factory.
"""
from person.teacher.hf.source import KINDS, TeacherFormatError, TeacherNotFoundError
from person.teacher.hf.teacher import Teacher, load_teacher, resolve_dtype

__all__ = ["KINDS", "Teacher", "TeacherFormatError", "TeacherNotFoundError", "load_teacher", "resolve_dtype"]
