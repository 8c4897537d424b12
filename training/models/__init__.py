from training.models.registry import (  # noqa: F401
    create_student,
    list_students,
    student_config,
)
from training.models.student import QFMStudent  # noqa: F401
