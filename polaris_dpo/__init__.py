"""polaris-dpo: find where a function-calling model fails, turn the failures into DPO pairs, train them away."""

__version__ = "0.1.0"
