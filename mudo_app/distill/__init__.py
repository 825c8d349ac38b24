"""MuDuo: mutual distillation between the student and the two frozen teachers."""
