from training.models.registry import create_student, list_students, student_config  # noqa: F401
from training.models.student import QFMStudent  # noqa: F401
