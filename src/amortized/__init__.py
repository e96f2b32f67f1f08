"""amortized: learners that adapt to a new task from its data, meta-trained across many tasks."""

__version__ = "0.1.0"
