"""MuDuo Label core: PET/CT IO, synthetic data, MuDuo training and evaluation.

This package never imports ``monailabel``; the MONAI Label app in ``apps/muduo`` is one client of it.
"""

__version__ = "0.1.0"
