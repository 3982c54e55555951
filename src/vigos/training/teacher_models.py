"""Teacher roles that are other models than the trained one: loaded here, or served elsewhere."""

from __future__ import annotations

from typing import Any

from vigos.method.teachers import SeparateTeacher
from vigos.models.loading import load_teacher_model
from vigos.models.modeling import output_head_shape


def load_separate_teachers(config: Any, processor: Any, model: Any) -> dict[str, Any]:
    """Each of ``config.teacher_models()`` once (two roles naming one source share it): a checkpoint or hub id
    loaded frozen, in the dtype and on the device of ``model``'s parameters (`SeparateTeacher`), or a URL
    as a client of that server (`vigos.rollout.served_teacher.ServedTeacherClient`), its tokenizer
    checked against ``processor``'s. Returns {term name: teacher}."""
    parameter = next(model.parameters())
    vocab_rows = output_head_shape(model)[0]
    loaded: dict[str, Any] = {}
    teachers = {}
    for name, source in config.teacher_models().items():
        option = f"{name}_teacher_model"
        if source not in loaded and source.startswith(("http://", "https://")):
            from vigos.rollout.served_teacher import ServedTeacherClient

            client = ServedTeacherClient(source, option=option, timeout=config.vllm_request_timeout)
            client.check_vocabulary(processor.tokenizer)
            loaded[source] = client
        elif source not in loaded:
            teacher = load_teacher_model(
                source, processor, option=option, vocab_rows=vocab_rows, dtype=parameter.dtype, device=parameter.device
            )
            loaded[source] = SeparateTeacher(teacher, source, vocab_rows)
        teachers[name] = loaded[source]
    return teachers
