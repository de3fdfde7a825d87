"""tuneoff: compare fine-tuning methods for text classifiers on accuracy and cost."""

__version__ = "0.2.0"
